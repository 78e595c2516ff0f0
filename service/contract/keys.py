"""Every Redis key the service uses, in one place (the embedded in-memory backend uses the same names).

All keys start with ``Settings.key_prefix`` so several deployments or test runs can share a database. Keys
carry a Redis Cluster hash tag (the part in braces): everything of the queue shares the tag ``{q}`` (so each
queue script touches one slot), and everything of one video shares ``{v:<video id>}``. Nothing on the serving
path scans the key space: the sets below are the indexes.

=========================================  ======  ====================================================
key                                        type    what
=========================================  ======  ====================================================
``{p}:{q}:jobs``                           stream  the shared job queue; consumer group ``workers``
``{p}:{q}:jobs:{worker_id}``               stream  one worker's own queue (jobs for videos it holds)
``{p}:{q}:streams``                        set     worker ids that have an own queue
``{p}:{q}:job:{job_id}``                   hash    a job's status, attempts, error and result (TTL)
``{p}:{q}:done:{job_id}``                  list    one token once the job finished; waiters rotate it (TTL)
``{p}:{q}:req:{request_hash}``             string  id of the job answering an identical request (TTL)
``{p}:{q}:aff:{video_id}:{model}``         string  the worker holding that video's adapter state (TTL)
``{p}:{q}:worker:{worker_id}``             string  a worker's heartbeat (JSON, TTL)
``{p}:{q}:workers``                        zset    worker id -> time of its last heartbeat
``{p}:{q}:metrics``                        hash    counters and histograms written by workers
``{p}:{v:id}:video``                       hash    an uploaded video's record: status, progress, duration
``{p}:{v:id}:blob``                        string  header of the uploaded bytes; chunks at ``...:c{i}``
``{p}:{v:id}:feat:{feature_id}``           string  header of cached float16 features; chunks at ``...:c{i}``
``{p}:{v:id}:feats``                       set     the feature ids cached for the video
=========================================  ======  ====================================================
"""

from __future__ import annotations

from dataclasses import dataclass

JOB_GROUP = "workers"
"""The consumer group every worker reads the job streams through."""


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str

    # ------------------------------------------------------------------------------------------------ queue slot

    @property
    def _q(self) -> str:
        return f"{self.prefix}:{{q}}"

    @property
    def jobs(self) -> str:
        return f"{self._q}:jobs"

    def worker_jobs(self, worker_id: str) -> str:
        return f"{self._q}:jobs:{worker_id}"

    @property
    def streams(self) -> str:
        return f"{self._q}:streams"

    def job(self, job_id: str) -> str:
        return f"{self._q}:job:{job_id}"

    def done(self, job_id: str) -> str:
        return f"{self._q}:done:{job_id}"

    def request(self, request_hash: str) -> str:
        return f"{self._q}:req:{request_hash}"

    def affinity(self, video_id: str, model: str) -> str:
        return f"{self._q}:aff:{video_id}:{model}"

    def worker(self, worker_id: str) -> str:
        return f"{self._q}:worker:{worker_id}"

    @property
    def workers(self) -> str:
        return f"{self._q}:workers"

    @property
    def metrics(self) -> str:
        return f"{self._q}:metrics"

    # ------------------------------------------------------------------------------------------------ video slots

    def _v(self, video_id: str) -> str:
        return f"{self.prefix}:{{v:{video_id}}}"

    def video(self, video_id: str) -> str:
        return f"{self._v(video_id)}:video"

    def blob(self, video_id: str) -> str:
        return f"{self._v(video_id)}:blob"

    def features(self, video_id: str, feature_id: str) -> str:
        return f"{self._v(video_id)}:feat:{feature_id}"

    def feature_ids(self, video_id: str) -> str:
        return f"{self._v(video_id)}:feats"

    @staticmethod
    def chunk(entry: str, index: int) -> str:
        """The ``index``-th chunk of a chunked entry (blob or features); same hash tag as the entry."""
        return f"{entry}:c{index}"

    @property
    def everything(self) -> str:
        """Match pattern of every key of this deployment (tests and benchmarks clean up with it)."""
        return f"{self.prefix}:*"
