"""The class prompts' token ids come from open_clip's tokenizer file loaded on its own (without the open_clip
package, whose import takes seconds of the node's start-up) and equal the package's own ids."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from ros_harness import child_env

CHECK = textwrap.dedent("""
    import sys
    from semla_ros.catseg.tokenizer import tokenize_class_names
    names = ["road, street", "traffic light", "person", "sky"]
    ours = tokenize_class_names(names)
    print("open_clip" in sys.modules)
    import open_clip
    from semla_ros.catseg.tokenizer import class_prompts
    print(bool((ours == open_clip.tokenize(class_prompts(names)).long()).all()), tuple(ours.shape))
""")


def test_tokens_without_the_open_clip_package_equal_its_own():
    done = subprocess.run([sys.executable, "-c", CHECK], env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False", "True (4, 77)"], done.stdout
