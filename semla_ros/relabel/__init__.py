"""Offline relabelling of recorded drives (ROS 2 bags or image folders) with per-cluster fusion:
embed every frame, cluster the embeddings, fuse the library once per cluster, segment each cluster
with its fusion, write masks and a report; resumable, on one machine or on Ray. Also the proposals
of new library entries from frames the library does not cover (`semla-library gaps`). No ROS."""
