"""mpqueue: a durable, embedded, multiprocess job queue for CPU-bound Python work."""

from .cancellation import CancelReport
from .current import CurrentJob, current_job
from .errors import (
    Cancelled,
    ConfigError,
    DuplicateTask,
    ExecutorBroken,
    Fail,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    MpqueueError,
    PayloadError,
    Retry,
    SerializationError,
    StoreCorrupt,
    StoreError,
    StoreFull,
    TaskNotFound,
)
from .executor import Executor
from .handle import Job
from .hooks import HookEvent
from .pausing import PauseChange, Paused
from .queue import Queue
from .records import ErrorInfo, JobState, Progress
from .task import Signature, Task
from .workflow import GroupHandle, chain, chord, group

__version__ = "0.1.0"

__all__ = [
    "CancelReport",
    "Cancelled",
    "ConfigError",
    "CurrentJob",
    "DuplicateTask",
    "ErrorInfo",
    "Executor",
    "ExecutorBroken",
    "Fail",
    "GroupHandle",
    "HookEvent",
    "Job",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "MpqueueError",
    "PauseChange",
    "Paused",
    "PayloadError",
    "Progress",
    "Queue",
    "Retry",
    "SerializationError",
    "Signature",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "Task",
    "TaskNotFound",
    "chain",
    "chord",
    "current_job",
    "group",
]
