"""The pipeline a batch of jobs on one video goes through, every step in order in :meth:`Pipeline.run`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from models.engine import Grounder, GroundingResult
from models.postprocess import select_moments
from models.r2 import VideoState
from models.video import VideoError, VideoInfo
from service.contract.errors import NotFound, classify, public_message
from service.contract.metrics import ADAPTER_HITS, BATCH_SIZE, CACHE_HITS, CACHE_MISSES, JOB_SECONDS, MetricsBatch
from service.contract.schemas import (
    EncodingRecord,
    HighlightsAnswer,
    Job,
    JobKind,
    Mode,
    MomentsAnswer,
    Reel,
    Status,
    SummaryAnswer,
    VideoRecord,
    encoding_field,
)
from service.contract.settings import Settings
from service.store.backend import Backend
from service.store.features import CachedFeatures
from service.store.jobs import Delivery, Outcome

from .models import Models
from .reels import reel_too_long, render_reel
from .search import store_embeddings
from .thumbnails import Thumbnails, name_thumbnails

log = logging.getLogger("service.worker")

_PROGRESS_EVERY_S = 0.5  # how often encoding progress is written to the video record
_AFFINITY_TTL_S = 3600.0  # how long a worker stays the preferred one for a video after it built its state


class Stages:
    """Seconds spent per pipeline stage (decode, encode, ground)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


@dataclasses.dataclass
class Video:
    """What answering needs of one video under one model: its adapter state (or its features) and its info."""

    info: VideoInfo
    features: torch.Tensor | None = None  # (K, T, P, C) float16; None when the state was in memory
    state: VideoState | None = None
    thumbnails: list[bytes] | None = None  # one JPEG per clip, when just encoded


def features_to_tensor(cached: CachedFeatures) -> torch.Tensor:
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[cached.dtype]
    return torch.frombuffer(bytearray(cached.data), dtype=dtype).reshape(cached.shape)  # (K, T, P, C)


def tensor_to_features(features: torch.Tensor, info: VideoInfo) -> CachedFeatures:
    array = features.contiguous().cpu().numpy()  # (K, T, P, C) float16
    return CachedFeatures(str(array.dtype), tuple(array.shape), array.tobytes(), dataclasses.asdict(info))


def clip_times(video: Video) -> list[float] | None:
    """Each clip's real timestamp, when the decoder recorded them (features cached before it did have none)."""
    times = video.info.player_clip_times()
    if video.state is not None:
        clips = video.state.num_frames
    else:
        assert video.features is not None
        clips = video.features.shape[1]  # (K, T, P, C)
    return times if len(times) == clips else None


def shape_answer(job: Job, results: list[GroundingResult], grounder: Grounder) -> dict[str, Any]:
    """A job's answer in the shape of its response body (the API adds video_id and model); it names the frame
    pipeline of the features it was computed on."""
    preprocess = grounder.spec.preprocess
    if job.mode == Mode.moments:
        # vars(), not dataclasses.asdict(): asdict deep-copies every saliency value (5x the cost of the rest).
        cut = [dict(vars(r), moments=select_moments(r.moments, job.top_k, job.min_score)) for r in results]
        return MomentsAnswer.model_validate(dict(results=cut, preprocess=preprocess)).model_dump()
    (result,) = results
    if job.mode == Mode.highlights:
        return HighlightsAnswer.model_validate(dict(
            query=result.query, clip_seconds=result.clip_seconds, duration=result.duration, saliency=result.saliency,
            highlights=grounder.highlights(result, job.top_k or 5), preprocess=preprocess,
            clip_times=result.clip_times)).model_dump()
    return SummaryAnswer.model_validate(dict(
        query=result.query, budget=job.budget or 0.15, duration=result.duration,
        segments=grounder.summarize(result, job.budget or 0.15), preprocess=preprocess)).model_dump()


class Pipeline:
    """Runs batches of jobs of one worker; ``consumer`` is the worker's id."""

    def __init__(self, settings: Settings, backend: Backend, models: Models, consumer: str, scratch: Path) -> None:
        self.settings, self.backend, self.models = settings, backend, models
        self.consumer, self.scratch = consumer, scratch
        self._infos: dict[str, VideoInfo] = {}  # video key -> info, for videos whose state is in memory
        self._thumbnails: dict[str, int] = {}  # video key -> thumbnails kept (answers name them), as last read
        self._touched: dict[str, float] = {}  # video id -> when its TTLs were last restarted

    def run(self, video_id: str, model: str, deliveries: list[Delivery], *, preprocess: str | None = None) -> None:
        """Every step a batch of jobs on one video goes through, in order.

        0. the model, loaded once at start (with frames made by ``preprocess``: the jobs' pipeline, None for the
        model's default; each pipeline has its own feature id, so its own cache entries and adapter states);
        1. the video's adapter state if this worker holds it, else
        2. the feature cache; on a miss 3. fetch the uploaded bytes, 4. decode (child process, time-limited)
        and CLIP-encode, 5. store the features (and the clip embeddings library search uses); then 6. the adapter
        and post-processing, one model call for all queries; 7. respond: store each job's answer, acknowledge it
        and wake its waiters, in one step.
        """
        jobs = [d.job for d in deliveries if d.job is not None]
        stages, metrics = Stages(), MetricsBatch()
        try:
            grounder = self.models.get(model, preprocess)                                         # 0
            key = f"{video_id}:{grounder.feature_id}"
            # An upload's encode job skips the held state: its record and the feature cache may have lost what
            # this worker still holds (Redis restarted empty, the record expired), and the job must restore both.
            uploads = any(j.kind == JobKind.encode_video for j in jobs)
            video = None if uploads else self.held(key, grounder, metrics)                        # 1
            if video is None:
                video = self.cache_lookup(video_id, grounder, metrics)                            # 2
            if video is None:
                path = self.fetch_video(video_id, metrics)                                        # 3
                try:
                    video = self.decode_and_encode(path, video_id, grounder, stages)              # 4
                finally:
                    path.unlink(missing_ok=True)
                self.store(video_id, model, grounder, video)                                      # 5
                self.keep(video_id, model, grounder, video)
            self.video_ready(video_id, model, grounder, video)
            answers = self.answer(video_id, model, grounder, video, jobs, stages, metrics)        # 6
            reel_errors = self.render_reels(video_id, jobs, answers, stages)                      # 6b
            outcomes = [Outcome(d, **reel_errors[d.job.job_id]) if d.job and d.job.job_id in reel_errors else
                        Outcome(d, result=answers.get(d.job.job_id) if d.job else None) for d in deliveries]
            for d in deliveries:
                if d.job is not None:
                    metrics.inc("r2_jobs_total", kind=d.job.kind.value,
                                outcome="failed" if d.job.job_id in reel_errors else "ready")
        except Exception as err:
            outcomes = self.failed(deliveries, err, metrics)
        for stage, seconds in stages.seconds.items():
            metrics.observe(JOB_SECONDS, seconds, stage=stage)
        self.backend.jobs.finish(self.consumer, outcomes, metrics.values,                         # 7
                                 {k: round(v, 4) for k, v in stages.seconds.items()})

    def held(self, key: str, grounder: Grounder, metrics: MetricsBatch) -> Video | None:
        """The video from this worker's memory: no Redis read at all (the warm path)."""
        info = self._infos.get(key)
        state = grounder.cached_state(key) if info is not None else None
        if info is None or state is None:
            self._infos.pop(key, None)
            return None
        metrics.inc(ADAPTER_HITS)
        return Video(info=info, state=state)

    def cache_lookup(self, video_id: str, grounder: Grounder, metrics: MetricsBatch) -> Video | None:
        cached = self.backend.features.get(video_id, grounder.feature_id, metrics)  # hot tier, else cold
        if cached is None:
            metrics.inc(CACHE_MISSES)
            return None
        metrics.inc(CACHE_HITS)
        return Video(info=VideoInfo(**cached.video), features=features_to_tensor(cached))

    def fetch_video(self, video_id: str, metrics: MetricsBatch | None = None) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.scratch / f"{video_id}-{uuid.uuid4().hex[:8]}.video"
        if not self.backend.videos.fetch_to(video_id, path, metrics):
            path.unlink(missing_ok=True)
            self.backend.records.delete_video(video_id)
            raise NotFound(f"the uploaded bytes of video {video_id} expired or were deleted; upload it again",
                           code="video_gone")
        return path

    def decode_and_encode(self, path: Path, video_id: str, grounder: Grounder, stages: Stages) -> Video:
        """Decode in a killable child process while encoding the chunks that already arrived."""
        s, records = self.settings, self.backend.records
        record = records.get_video(video_id)
        track = self.owns_record(record, grounder)  # the upload's own encoding
        other = record is not None and record.model != grounder.spec.name  # another model's: its own entry
        if track:
            records.update_video(video_id, status=Status.processing, progress=0.0,
                                 preprocess=grounder.spec.preprocess)
        elif other:
            self.set_encoding(video_id, grounder, status=Status.processing, progress=0.0)
        report: Callable[[float], None] | None = None
        if track or other:
            last_report = time.monotonic()

            def report(fraction: float) -> None:
                nonlocal last_report
                if time.monotonic() - last_report >= _PROGRESS_EVERY_S:
                    last_report = time.monotonic()
                    if track:
                        records.update_video(video_id, progress=min(0.99, fraction))
                    else:
                        self.set_encoding(video_id, grounder, status=Status.processing,
                                          progress=min(0.99, fraction))

        thumbs = Thumbnails(grounder.frame_spec, s.thumbnail_side, s.thumbnail_quality)
        info, features = grounder.encode_file(path, timeout_s=s.decode_timeout_s, max_duration=s.max_duration_s,
                                              max_pixels=s.max_pixels, progress=report, stage=stages,
                                              on_frames=thumbs.add)
        clips = int(features.shape[1])
        return Video(info=info, features=features,
                     thumbnails=thumbs.jpegs if thumbs.jpegs and len(thumbs.jpegs) == clips else None)

    def set_encoding(self, video_id: str, grounder: Grounder, **fields: Any) -> None:
        """The video's entry for this model (``models`` in its status): one hash field, written whole."""
        entry = EncodingRecord(preprocess=grounder.spec.preprocess, feature_id=grounder.feature_id, **fields)
        self.backend.records.update_video(video_id, **{encoding_field(grounder.spec.name): entry.model_dump(
            mode="json")})

    def store(self, video_id: str, model: str, grounder: Grounder, video: Video) -> None:
        assert video.features is not None
        self.backend.features.put(video_id, grounder.feature_id, tensor_to_features(video.features, video.info))
        if grounder.feature_id == self.models.get(model).feature_id:  # the model's default pipeline: searchable
            store_embeddings(self.backend, self.settings, model, grounder, video_id, video.features,
                             dataclasses.asdict(video.info))
        if video.thumbnails:
            self.backend.thumbnails.put(video_id, grounder.feature_id, video.thumbnails)

    def keep(self, video_id: str, model: str, grounder: Grounder, video: Video) -> None:
        """Build the adapter state of a video just encoded, so its first query is warm, and route its queries
        here."""
        assert video.features is not None
        key = f"{video_id}:{grounder.feature_id}"
        video.state = grounder.video_state(video.features, key)
        self._infos[key] = video.info
        self.backend.jobs.hold(self.consumer, video_id, model, _AFFINITY_TTL_S)

    def video_ready(self, video_id: str, model: str, grounder: Grounder, video: Video) -> None:
        """The upload's record turns ready once it has the features of the model it was uploaded for; the
        video's lifetimes restart on use (at most every tenth of their TTL, to spare round trips)."""
        records = self.backend.records
        if video.features is not None:  # just read or encoded: the record may still say processing
            record = records.get_video(video_id)
            clips = int(video.features.shape[1])
            owned = record is not None and self.owns_record(record, grounder)
            update: dict[str, Any] = {}
            if record is not None and owned and record.status != Status.ready:
                update.update(status=Status.ready, progress=1.0, duration=video.info.duration, num_clips=clips,
                              clip_seconds=1.0 / grounder.spec.fps, preprocess=grounder.spec.preprocess,
                              error_code=None, error_message=None, error_status=None)
            entry = record.encodings.get(grounder.spec.name) if record is not None else None
            fresh = video.thumbnails is not None  # just encoded: thumbnails (re)made with these features
            kept = len(video.thumbnails or []) if fresh else (entry.thumbnails if entry is not None and
                                                               entry.feature_id == grounder.feature_id else 0)
            self._thumbnails[f"{video_id}:{grounder.feature_id}"] = kept
            if record is not None and (owned or record.model != grounder.spec.name) and (
                    fresh or entry is None or entry.status != Status.ready or entry.feature_id != grounder.feature_id):
                ready = EncodingRecord(status=Status.ready, progress=1.0, preprocess=grounder.spec.preprocess,
                                       feature_id=grounder.feature_id, num_clips=clips,
                                       clip_seconds=1.0 / grounder.spec.fps, thumbnails=kept)
                update[encoding_field(grounder.spec.name)] = ready.model_dump(mode="json")
            if update:  # one write: a reader never sees the video ready without its thumbnails
                records.update_video(video_id, **update)
        now = time.monotonic()
        if now - self._touched.get(video_id, -float("inf")) >= self.settings.video_ttl_s / 10:
            self._touched[video_id] = now
            records.touch_video(video_id, self.settings.video_ttl_s)
            self.backend.videos.touch(video_id)

    def owns_record(self, record: VideoRecord | None, grounder: Grounder) -> bool:
        """Whether these are the features the upload's record describes: its model, and the pipeline it asked
        for (the model's default when it named none). Features made another way leave the record alone."""
        if record is None or record.model != grounder.spec.name:
            return False
        wanted = record.preprocess or self.models.get(record.model).spec.preprocess
        return wanted == grounder.spec.preprocess

    def answer(self, video_id: str, model: str, grounder: Grounder, video: Video, jobs: list[Job], stages: Stages,
               metrics: MetricsBatch) -> dict[str, dict[str, Any]]:
        """One model call per NMS setting for all ground jobs of the batch; each job gets its own cut."""
        key = f"{video_id}:{grounder.feature_id}"
        answers: dict[str, dict[str, Any]] = {}
        by_nms: dict[float | None, list[Job]] = defaultdict(list)
        for job in jobs:
            if job.kind == JobKind.ground:
                by_nms[job.nms_thres].append(job)
        for nms_thres, group in by_nms.items():
            queries = list(dict.fromkeys(q for job in group for q in job.queries))
            built = grounder.stats["video_states_built"]
            with stages("ground"):
                source = video.state if video.state is not None else video.features
                assert source is not None
                results = grounder.ground(source, queries, video_key=key, duration=video.info.duration, top_k=None,
                                          nms_thres=nms_thres, min_score=None, clip_times=clip_times(video))
            metrics.observe(BATCH_SIZE, len(queries))
            if grounder.stats["video_states_built"] > built:  # this worker holds the video now: route to it
                self._infos[key] = video.info
                self.backend.jobs.hold(self.consumer, video_id, model, _AFFINITY_TTL_S)
            by_query = dict(zip(queries, results, strict=True))
            for job in group:
                answers[job.job_id] = name_thumbnails(
                    shape_answer(job, [by_query[q] for q in job.queries], grounder), job, video_id,
                    self._thumbnails.get(key, 0), 1.0 / grounder.spec.fps)
        return answers

    def render_reels(self, video_id: str, jobs: list[Job], answers: dict[str, dict[str, Any]],
                     stages: Stages) -> dict[str, dict[str, Any]]:
        """Cut the segments of each summary asked with ``render`` into an mp4 reel, kept as long as the answer
        (which names it); the errors of the jobs whose reel failed, by job id (the other jobs are not affected)."""
        todo = [j for j in jobs if j.kind == JobKind.ground and j.mode == Mode.summary and j.render
                and j.job_id in answers]
        if not todo:
            return {}
        s, errors = self.settings, {}
        try:
            source = self.fetch_video(video_id)
        except Exception as err:
            status, code, message = classify(err)
            return {j.job_id: dict(error_status=status, error_code=code, error_message=message) for j in todo}
        try:
            for job in todo:
                body = answers[job.job_id]
                target = self.scratch / f"reel-{job.job_id}.mp4"
                try:
                    segments = [(m["start"], m["end"]) for m in body["segments"]]
                    total = sum(end - start for start, end in segments)
                    if total > s.reel_max_seconds:
                        raise reel_too_long(total, s.reel_max_seconds)
                    with stages("render"):
                        seconds = render_reel(source, segments, target, max_height=s.reel_max_height,
                                              max_bytes=s.reel_max_bytes, timeout_s=s.reel_timeout_s)
                    self.backend.reels.put_file(video_id, job.job_id, target, s.result_ttl_s)
                    body["reel"] = Reel(url=f"/v1/videos/{video_id}/reels/{job.job_id}.mp4",
                                        duration=round(seconds, 3), size_bytes=target.stat().st_size).model_dump()
                except Exception as err:
                    status, code, message = classify(err)
                    if status >= 500:
                        log.warning("reel of job %s failed: %s (%s)", job.job_id, message, code)
                    errors[job.job_id] = dict(error_status=status, error_code=code, error_message=message)
                finally:
                    target.unlink(missing_ok=True)
        finally:
            source.unlink(missing_ok=True)
        return errors

    def failed(self, deliveries: list[Delivery], err: BaseException, metrics: MetricsBatch) -> list[Outcome]:
        """Each job of the group ends ``failed`` with the reason; a bad video also marks the video failed."""
        status, code, message = classify(err)
        message = public_message(message, self.settings.max_error_chars)  # stored, then shown: no scratch names
        if status >= 500 and code not in ("weights_missing", "model_unavailable", "model_not_loaded"):
            log.exception("job failed unexpectedly", exc_info=err)
        else:
            log.warning("job failed: %s (%s)", message, code)
        records = self.backend.records
        for d in deliveries:
            if d.job is None:
                continue
            record = records.get_video(d.job.video_id)
            if record is not None and (isinstance(err, VideoError) or
                                       (d.job.kind == JobKind.encode_video and record.model == d.job.model)):
                records.update_video(d.job.video_id, status=Status.failed, error_code=code, error_message=message,
                                     error_status=status)
                # Its bytes would hold Redis memory (and push out ready videos' features) until the video TTL for
                # nothing: uploading it again stores them again and retries.
                self.backend.videos.delete(d.job.video_id)
            entry = record.encodings.get(d.job.model) if record is not None else None
            if record is not None and record.model != d.job.model and (
                    d.job.kind == JobKind.encode_video or (entry is not None and not entry.status.finished)):
                failed = EncodingRecord(status=Status.failed, preprocess=entry.preprocess if entry else None,
                                        error_code=code, error_message=message, error_status=status)
                records.update_video(d.job.video_id, **{encoding_field(d.job.model): failed.model_dump(mode="json")})
            metrics.inc("r2_jobs_total", kind=d.job.kind.value, outcome="failed")
        return [Outcome(d, error_status=status, error_code=code, error_message=message) for d in deliveries]
