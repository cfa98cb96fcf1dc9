"""Every setting read from the environment: each variable's name and what it means, then
how it is read. Each is read when asked for, so a test or a launcher may set it just
before. Besides these, every option of the command line can be set as
MESH_<COMMAND>_<OPTION> (click reads those: cli/__init__.py), and MESH_BROKER and
MESH_KEYS are the --broker and --keys options' own variables.

Processes started by others get their settings on their command line or in their
config (a group's keys folder is in its spawn config, worker.py), not through here."""
import os

BROKER = "MESH_BROKER"              # the broker's address, or a pair's two: --broker of every command that calls one
KEYS = "MESH_KEYS"                  # the keys folder: --keys of the processes, mesh.Client's default
LOG_LEVEL = "MESH_LOG_LEVEL"        # Python logging level of the broker, workers and groups (WARNING)
MAX_MESSAGE = "MESH_MAX_MESSAGE"    # the largest message a socket accepts, in bytes (1 GiB)
PAIR_SECRET = "MESH_PAIR_SECRET"    # the secret a keyless pair's two brokers share (16 characters or more)
HEARTBEAT_EXPIRY = "MESH_HEARTBEAT_EXPIRY"  # seconds of silence before a group is in doubt (broker/liveness.py)
DIE_WITH_PARENT = "MESH_DIE_WITH_PARENT"    # "1": a broker or worker ends with the process that started it
PROFILE_DIR = "MESH_PROFILE_DIR"    # a development aid: one cProfile dump per process into this folder
SHOTS_DATA = "MESH_SHOTS_DATA"      # the NBA shots CSV of `mesh demo shots`
TEST_FAULTS = "MESH_TEST_FAULTS"    # faults injected at known points, for tests (faults.py)
TEST_FAULTS_LOG = "MESH_TEST_FAULTS_LOG"    # ...and the file where each one that fired is written
SLURM_NODE_ADDRS = "MESH_SLURM_NODE_ADDRS"  # name=addr,...: from `mesh up --slurm` to its srun tasks (internal)
XDG_STATE_HOME = "XDG_STATE_HOME"   # the base of the user's state folders (XDG Base Directory)


def keys_dir():
    return os.environ.get(KEYS) or None


def log_level():
    return os.environ.get(LOG_LEVEL, "WARNING")


def heartbeat_expiry():
    return os.environ.get(HEARTBEAT_EXPIRY)


def max_message():
    return int(os.environ.get(MAX_MESSAGE, 1 << 30))


def pair_secret():
    return os.environ.get(PAIR_SECRET, "")


def die_with_parent():
    return os.environ.get(DIE_WITH_PARENT) == "1"


def profile_dir():
    return os.environ.get(PROFILE_DIR) or None


def shots_data():
    return os.environ.get(SHOTS_DATA)


def faults():
    """(plan, log file), each None when not set."""
    return os.environ.get(TEST_FAULTS), os.environ.get(TEST_FAULTS_LOG)


def state_home(env=None):
    """XDG_STATE_HOME as set (None when not), from env (a mapping) or this process's environment."""
    return (os.environ if env is None else env).get(XDG_STATE_HOME) or None


def home(env=None):
    """The user's home folder: HOME, else what the password database says."""
    return (os.environ if env is None else env).get("HOME") or os.path.expanduser("~")


def environ():
    """The whole environment, for what reads another program's variables (Slurm's: slurm.py)."""
    return os.environ
