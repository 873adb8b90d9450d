"""The lift-splat-shoot stage: training (`bev-reid train-lss`) and validation (`val-lss`).
The network itself is :mod:`bev_reid.models.lss`."""
