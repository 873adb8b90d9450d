"""nuScenes access, the synthetic nuScenes-format world, and LiDAR BEV rasters."""
