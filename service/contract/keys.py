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
``{p}:{q}:beats``                          hash    worker id -> its last heartbeat (JSON ``WorkerInfo``)
``{p}:{q}:alive``                          zset    worker id -> time its heartbeat goes stale
``{p}:{q}:workers``                        zset    worker id -> time of its last heartbeat
``{p}:{q}:metrics``                        hash    counters and histograms written by workers
``{p}:{q}:videos``                         zset    video id -> upload time (``GET /v1/videos``; pruned on read)
``{p}:{q}:library:{model}``                set     video ids searchable under that model (``POST /v1/search``)
``{p}:{q}:cb:{job_id}``                    list    webhook URLs waiting for that job to finish (TTL)
``{p}:{q}:hooks``                          zset    pending webhook delivery id -> when it is due (or its lease ends)
``{p}:{q}:hooks:data``                     hash    pending webhook delivery id -> URL, finished job, attempts
``{p}:{q}:hooks:seq``                      string  the last webhook delivery id handed out
``{p}:{i:<hash>}:idem``                    string  an Idempotency-Key's request fingerprint and answer (TTL)
``{p}:{v:id}:video``                       hash    an uploaded video's record: status, progress, duration
``{p}:{v:id}:blob``                        string  header of the uploaded bytes; chunks at ``...:c{i}``
``{p}:{v:id}:feat:{feature_id}``           string  header of cached float16 features; chunks at ``...:c{i}``
``{p}:{v:id}:feats``                       set     the feature ids cached for the video
``{p}:{v:id}:thumbs:{feature_id}``         string  header of the per-clip JPEG thumbnails; chunks at ``...:c{i}``
``{p}:{v:id}:reel:{job_id}``               string  header of a rendered highlight reel (mp4); chunks as above
``{p}:{v:id}:reels``                       set     the job ids of the video's reels
=========================================  ======  ====================================================

Rules for every key added here (Redis Cluster and ``maxmemory`` depend on them):

* **One slot per operation.** A script, ``MULTI`` or multi-key command may only touch keys of one hash tag:
  the queue's ``{q}``, or one video's ``{v:<id>}``. A new per-video key goes under :meth:`Keys._v`, a new
  queue-side key under :meth:`Keys._q`; something per user, per webhook, ... gets a tag of its own (e.g.
  ``{p}:{u:<id>}:...``) and never shares a script with another tag.
* **Scripts declare every key in KEYS.** A Lua script never builds a key name from a prefix or from data it
  read: the caller passes each key (a cluster routes by them, and Redis requires it). When the names depend on
  data (the own queues of the workers), the caller passes the names it knows plus the data they came from, the
  script checks that data and answers ``stale`` when it changed, and the caller retries
  (:mod:`service.store.redis_jobs`).
* **No SCAN, no KEYS** on the serving path: keep an index (a set, a sorted set, a hash) in the same slot.
* **Only caches expire.** Redis runs with ``maxmemory-policy volatile-lru`` (docs/scaling.md): any key with a
  TTL may be evicted under memory pressure, not only when it expires. Give a TTL only to what the service can
  lose or rebuild: hot copies (their cold copy stays, :mod:`service.store.cold`), records restored from the
  cold tier, job records (rebuilt from the queued payload), tokens and hints. What must survive (streams,
  indexes, heartbeats, counters) has no TTL and is removed explicitly.
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

    @property
    def results(self) -> str:
        """Sorted set of finished ground jobs by finish time: the oldest are dropped past R2_MAX_STORED_RESULTS."""
        return f"{self._q}:results"

    def request(self, request_hash: str) -> str:
        return f"{self._q}:req:{request_hash}"

    def affinity(self, video_id: str, model: str) -> str:
        return f"{self._q}:aff:{video_id}:{model}"

    @property
    def beats(self) -> str:
        return f"{self._q}:beats"

    @property
    def alive(self) -> str:
        return f"{self._q}:alive"

    @property
    def workers(self) -> str:
        return f"{self._q}:workers"

    @property
    def metrics(self) -> str:
        return f"{self._q}:metrics"

    def callbacks(self, job_id: str) -> str:
        return f"{self._q}:cb:{job_id}"

    @property
    def hooks(self) -> str:
        return f"{self._q}:hooks"

    @property
    def hook_data(self) -> str:
        return f"{self._q}:hooks:data"

    @property
    def hook_seq(self) -> str:
        return f"{self._q}:hooks:seq"

    # ------------------------------------------------------------------------------------------------ own slots

    def idempotency(self, key_hash: str) -> str:
        """One Idempotency-Key (hashed with the caller's API key): a slot of its own, touched by no script."""
        return f"{self.prefix}:{{i:{key_hash}}}:idem"

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

    def library(self, model: str) -> str:
        """Set of the video ids searchable under ``model`` (a hint: the search checks each video's record);
        deployment-wide, so in the queue's slot (never in a script with a video's keys)."""
        return f"{self._q}:library:{model}"

    def thumbnails(self, video_id: str, feature_id: str) -> str:
        return f"{self._v(video_id)}:thumbs:{feature_id}"

    def reel(self, video_id: str, job_id: str) -> str:
        return f"{self._v(video_id)}:reel:{job_id}"

    def reel_ids(self, video_id: str) -> str:
        return f"{self._v(video_id)}:reels"

    @property
    def video_list(self) -> str:
        """The listing index: deployment-wide, so in the queue's slot (written after, never in a script with, a
        video's keys)."""
        return f"{self._q}:videos"

    @staticmethod
    def chunk(entry: str, index: int) -> str:
        """The ``index``-th chunk of a chunked entry (blob or features); same hash tag as the entry."""
        return f"{entry}:c{index}"

    @property
    def everything(self) -> str:
        """Match pattern of every key of this deployment (tests and benchmarks clean up with it)."""
        return f"{self.prefix}:*"
