"""The BEV tracker: detections in the nuScenes format, a constant-velocity Kalman filter, the
ReID embedding for re-identification after occlusion, and the devkit's tracking evaluation."""
