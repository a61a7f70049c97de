"""Verification against the official implementation: reference fixtures (shared/fixtures/*) rebuilt
from their files alone and compared tensor by tensor, for the CAT-Seg network and for SemLA fusion
(through the node's own fusion path). Used by `semla-fixture-check` and the tests. No ROS."""
