"""The durable generation queue: jobs in SQLite, results in the catalog, one server per backend slot.

>>> from lorabench.catalog import Catalog
>>> from lorabench.queue import Queue
>>> from lorabench.sdnext import Txt2ImgRequest
>>> queue = Queue(Catalog(), backends=["http://127.0.0.1:7860"])          # doctest: +SKIP
>>> job = queue.submit(Txt2ImgRequest(prompt="a fox <lora:ink_style:0.8>", seed=7))  # doctest: +SKIP
>>> queue.start()                    # a task on the notebook's loop; returns at once  # doctest: +SKIP
>>> job = await queue.wait(job.id)   # doctest: +SKIP
>>> [r.path for r in queue.results(job.id)]                                # doctest: +SKIP

States: ``queued → running → succeeded | failed | cancelled | interrupted`` (see ``_jobs``).
Scripts run ``lorabench worker`` and submit with ``lorabench generate``.
"""

from lorabench.catalog._history import History, ResultRecord
from lorabench.queue._backends import BackendSpec, BackendStatus
from lorabench.queue._events import JobEvent, ProgressCallback
from lorabench.queue._jobs import SETTLED, STATES, TERMINAL, Job
from lorabench.queue._queue import Queue
from lorabench.queue._request import build_prompt, job_key
from lorabench.queue._results import SweepReport
from lorabench.queue._retry import RetryPolicy
from lorabench.queue._sinks import Delivery, FolderSink, Sink, WebhookSink

__all__ = [
    "SETTLED",
    "STATES",
    "TERMINAL",
    "BackendSpec",
    "BackendStatus",
    "Delivery",
    "FolderSink",
    "History",
    "Job",
    "JobEvent",
    "ProgressCallback",
    "Queue",
    "ResultRecord",
    "RetryPolicy",
    "Sink",
    "SweepReport",
    "WebhookSink",
    "build_prompt",
    "job_key",
]
