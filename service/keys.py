"""Every Redis key the service uses, in one place (the embedded in-memory backend uses the same names).

All keys start with ``Settings.key_prefix`` so several deployments or test runs can share a database.

======================================  ======  =======================================================
key                                     type    what
======================================  ======  =======================================================
``{p}:jobs``                            stream  the job queue; consumer group ``workers``
``{p}:job:{job_id}``                    hash    a job's status, attempts, error and result (TTL)
``{p}:req:{request_hash}``              string  id of the job answering an identical request (TTL)
``{p}:video:{video_id}``                hash    an uploaded video's record: status, progress, duration (TTL)
``{p}:blob:{video_id}``                 string  header of the uploaded bytes; chunks at ``...:c{i}`` (TTL)
``{p}:feat:{video_id}:{feature_id}``    string  header of cached float16 features; chunks at ``...:c{i}``
``{p}:worker:{worker_id}``              string  a worker's heartbeat (JSON, TTL)
``{p}:metrics``                         hash    counters and histograms written by workers, read by /metrics
======================================  ======  =======================================================
"""

from __future__ import annotations

from dataclasses import dataclass

JOB_GROUP = "workers"
"""The consumer group every worker reads the job stream through."""


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def request(self, request_hash: str) -> str:
        return f"{self.prefix}:req:{request_hash}"

    def video(self, video_id: str) -> str:
        return f"{self.prefix}:video:{video_id}"

    def blob(self, video_id: str) -> str:
        return f"{self.prefix}:blob:{video_id}"

    def features(self, video_id: str, feature_id: str) -> str:
        return f"{self.prefix}:feat:{video_id}:{feature_id}"

    def features_of_video(self, video_id: str) -> str:
        """Match pattern of every cached feature entry (headers and chunks) of one video."""
        return f"{self.prefix}:feat:{video_id}:*"

    @staticmethod
    def chunk(entry: str, index: int) -> str:
        """The ``index``-th chunk of a chunked entry (blob or features)."""
        return f"{entry}:c{index}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workers(self) -> str:
        """Match pattern of every heartbeat key."""
        return f"{self.prefix}:worker:*"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}:metrics"

    @property
    def everything(self) -> str:
        """Match pattern of every key of this deployment (tests clean up with it)."""
        return f"{self.prefix}:*"
