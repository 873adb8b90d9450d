"""The synthetic nuScenes-format world (`bev-reid synth`): scene layout, agents, rendering of
the six cameras and the LiDAR, and the writer of the tables (:func:`generate.generate_world`)."""
