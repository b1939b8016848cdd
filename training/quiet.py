"""A quiet TensorFlow start-up for the command line and the benchmark scripts.

On a machine with no NVIDIA driver, TensorFlow's CUDA build prints, on stderr, lines that
read like failures although nothing is wrong:

```
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:... 1939 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:... 1939 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)
I0000 00:00:... 1939 port.cc:153] oneDNN custom operations are on. You may see slightly ...
```

The first two come twice from `import tensorflow` (two of its libraries each look for the
CUDA runtime before TensorFlow has applied `TF_CPP_MIN_LOG_LEVEL`, so no level hides
them); the third comes from the first device listing, at ERROR level, so level 2 shows it.
The fourth, also twice at import, says that oneDNN is on, which `training/__init__.py`
asks for and every run's machine line reports (`training.machine`).
`quiet_tensorflow_startup()` removes exactly these lines and nothing else: everything else
written to stderr (Python tracebacks, warnings, any other TensorFlow message, our own
`error: ...` lines) goes through unchanged.

`TF_CPP_MIN_LOG_LEVEL=0` in the environment turns all of this off and shows every
TensorFlow message; any other value the user set is kept as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import subprocess
import sys
from collections.abc import Iterator

DEFAULT_LOG_LEVEL = "2"  # TensorFlow's C++ logs: errors only

# One alternative per line above; matched against each stderr line.
STARTUP_NOISE = "|".join(
    [
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
        r"^I\d{4} \S+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.$",
        r"^E\d{4} \S+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ",
        r"^I\d{4} \S+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. ",
    ]
)

# Runs in a child process so that what it has read still reaches the terminal if
# TensorFlow aborts the parent mid-import; it ignores Ctrl-C, which reaches the parent.
_FILTER = """\
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not noise.search(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver: a /dev/nvidia* (or WSL /dev/dxg) device
    node, or a loadable libcuda.so.1, the library TensorFlow calls cuInit from."""
    if glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def stderr_without(noise: str) -> Iterator[None]:
    """Within the block, drops the lines of file descriptor 2 that match the regex `noise`.

    Works below Python (C++ libraries write to the descriptor, not to `sys.stderr`): the
    descriptor is pointed at a pipe read by a small filter process that copies every other
    line to the real stderr. On exit the descriptor is restored and the filter drained, so
    the lines keep their order with what follows.
    """
    sys.stderr.flush()
    real = os.dup(2)
    try:
        filter_process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, noise], stdin=subprocess.PIPE, stdout=real
        )
    except OSError:  # no interpreter to start (embedded Python): leave stderr alone
        os.close(real)
        yield
        return
    os.dup2(filter_process.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)
        os.close(real)
        filter_process.stdin.close()
        # A process started inside the block may still hold the pipe; the filter then
        # keeps copying its lines after we move on.
        with contextlib.suppress(subprocess.TimeoutExpired):
            filter_process.wait(timeout=10)


def quiet_tensorflow_startup() -> None:
    """Imports TensorFlow without its start-up noise. Call before anything imports it.

    Sets `TF_CPP_MIN_LOG_LEVEL=2` (errors only) unless the environment has a value. Then,
    on Linux with no NVIDIA driver and a level above 0, imports TensorFlow and lists its
    GPUs (the call that tries cuInit) with `STARTUP_NOISE` filtered out of stderr. With a
    driver nothing is filtered: there these lines do not appear when the GPU works and
    explain why it is not used when it does not. Does nothing once TensorFlow is imported.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LOG_LEVEL)
    if os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("", "0"):
        return
    if not sys.platform.startswith("linux") or nvidia_driver_present():
        return
    with stderr_without(STARTUP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
