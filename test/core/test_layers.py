"""The direction of dependency: ges_core (pure PyTorch/numpy) never imports ges_ros, rclpy, ROS messages or rosbags,
not even lazily inside a function; every ges_core module imports with all of them blocked."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("ges_ros", "rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs", "stereo_msgs",
             "diagnostic_msgs", "message_filters", "cv_bridge", "rosbags", "launch", "launch_ros", "rosidl_runtime_py")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):                       # every import, top level or inside a function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant):
            yield node.lineno, str(node.args[0].value)


def test_ges_core_has_no_ros_import_line():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {name}"
                 for path in sorted((ROOT / "ges_core").rglob("*.py"))
                 for line, name in _imports(path) if name.split(".")[0] in FORBIDDEN]
    assert not offenders, "ges_core must not import ROS or ges_ros:\n" + "\n".join(offenders)


def test_core_tests_need_no_ros():
    """test/core mirrors ges_core: its tests run where only the core is installed (test/ros holds the rest)."""
    offenders = [f"{path.relative_to(ROOT)}:{line}: {name}"
                 for path in sorted((ROOT / "test" / "core").rglob("*.py"))
                 for line, name in _imports(path) if name.split(".")[0] in FORBIDDEN + ("ros_harness", "oracle")]
    assert not offenders, "test/core must not import ROS or ges_ros:\n" + "\n".join(offenders)


def test_the_scan_sees_lazy_imports(tmp_path):
    """The check above reads function bodies too (the imports it once missed were all lazy)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ges_ros.params import PARAMS\n    import rclpy\n")
    assert [n for _, n in _imports(f)] == ["ges_ros.params", "rclpy"]


def test_every_ges_core_module_imports_with_ros_blocked():
    code = f"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {FORBIDDEN!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked in this test: {{name}}")
sys.meta_path.insert(0, Block())
import ges_core
names = [m.name for m in pkgutil.walk_packages(ges_core.__path__, "ges_core.")]
for name in names:
    importlib.import_module(name)
import ges_core.cli
ges_core.cli.build_parser()
print(len(names), "modules")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[0]) >= 20
