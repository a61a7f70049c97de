"""The built-in demo, without ROS: a procedural multi-domain world with exact labels, its asset build
(small CAT-Seg + LoRA library), its export as a dataset, its evaluation table and its shift scenarios
(streams with the true domain of every frame). The demo camera
node that plays the world lives in semla_ros/ros/demo_camera.py."""
