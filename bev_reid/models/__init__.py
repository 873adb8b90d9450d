"""Networks: lift-splat-shoot, the BEV encoder, the ReID embedding net and its heads."""
