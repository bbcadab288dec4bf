"""What stereo.launch.py passes to the node, decided without ROS's launch (so that it is tested everywhere) and
without torch (the launch process imports it).

A parameters file gives every parameter it names; a launch argument overrides it only when it was given on the
command line. An argument left at its default ("") passes nothing, so the file's value, or the node's own default,
stands (launch arguments used to be passed always, their defaults silently replacing the file's values).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

# launch argument -> (the node parameter it sets, its type)
LAUNCH_PARAMETERS: Dict[str, type] = {"weights": str, "device": str, "approximate_sync": bool, "use_sim_time": bool}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def node_overrides(given: Mapping[str, str]) -> Dict[str, Any]:
    """Launch argument values as strings ("" = not given) -> the node parameters to override, typed."""
    unknown = sorted(set(given) - set(LAUNCH_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown launch arguments {unknown}; valid: {sorted(LAUNCH_PARAMETERS)}")
    out: Dict[str, Any] = {}
    for name, text in given.items():
        text = str(text).strip()
        if not text:
            continue
        if LAUNCH_PARAMETERS[name] is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"launch argument {name}:={text!r} is not true or false")
            out[name] = text.lower() in _TRUE
        else:
            out[name] = text
    return out


def exit_error(returncode: int, shutting_down: bool) -> Optional[str]:
    """Why the launch ends with an error when stereo_node exits, or None: an exit the launch asked for (Ctrl-C,
    a shutdown; the node may report the signal's code) or a clean one is no error."""
    if not returncode or shutting_down:
        return None
    return (f"stereo_node exited with code {returncode}: it could not start or stopped on an error (its 'cannot "
            "start' or error line above says why); ending the launch")
