"""semla_ros: open-vocabulary segmentation (CAT-Seg) that adapts to the camera's domain
by retrieving and fusing LoRA adapters (SemLA), packaged for ROS 2.

The generated messages (`semla_ros.msg`) may be installed in a different prefix than this
source tree (pip world: the venv's site-packages; ROS world: the colcon install space), so the
package path is extended to every `semla_ros/` directory on `sys.path`.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
