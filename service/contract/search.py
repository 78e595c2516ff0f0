"""Request and response bodies of ``POST /v1/search`` (library search, docs/search.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import VIDEO_ID_EXAMPLE


class SearchRequest(BaseModel):
    """One text query over every searchable video of a model, or over the listed ones."""

    query: str = Field(description="natural-language query")
    model: str | None = Field(None, description="model name (GET /v1/models); default: the service's default")
    video_ids: list[str] | None = Field(None, min_length=1, description="search only these videos (each must be "
                                                                        "ready under the model)")
    top_k: int = Field(10, ge=1, le=1000, description="hits per page")
    group_by: Literal["video", "moment"] = Field("moment", description="moment: the best moments, any video; "
                                                                       "video: the best videos, each with its moments")
    exhaustive: bool = Field(False, description="ground on every video (the reference) instead of the first "
                                                "stage's candidates")
    page_token: str | None = Field(None, max_length=512, description="next_page_token of the previous page")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "a dog catches a frisbee", "model": "qvhighlights", "top_k": 10, "group_by": "video"}]})


class SearchMoment(BaseModel):
    """One moment of one video."""

    video_id: str
    start: float
    end: float
    score: float
    thumbnail: str | None = Field(None, description="route of the JPEG of the clip it starts in, when the video "
                                                    "has thumbnails")


class SearchVideo(BaseModel):
    """One video with its moments, best first (``group_by: video``); ``score`` is its best moment's."""

    video_id: str
    score: float
    moments: list[SearchMoment]


class SearchResponse(BaseModel):
    """A page of hits, best first; ``next_page_token`` is null on the last page."""

    query: str
    model: str
    group_by: Literal["video", "moment"]
    exhaustive: bool
    searched_videos: int = Field(description="videos in the search")
    grounded_videos: int = Field(description="videos the R2 adapter ran on (the first stage's candidates)")
    moments: list[SearchMoment] | None = Field(None, description="group_by moment")
    videos: list[SearchVideo] | None = Field(None, description="group_by video")
    next_page_token: str | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"query": "a dog catches a frisbee", "model": "qvhighlights", "group_by": "moment", "exhaustive": False,
         "searched_videos": 1000, "grounded_videos": 32,
         "moments": [{"video_id": VIDEO_ID_EXAMPLE, "start": 12.0, "end": 20.0, "score": 0.83}],
         "next_page_token": "eyJvIjoxMCwiaCI6IjNmMmEifQ"}]})
