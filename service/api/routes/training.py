"""Training a model on uploaded videos: start a job, follow its progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from service.contract.schemas import TrainingStatus, TrainRequest

from ..bodies import json_body, json_request_body, train_limit
from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..responses import errors

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["training"])

TrainBody = Annotated[TrainRequest, json_body(TrainRequest, train_limit)]


@router.post("/models/{name}/train", response_model=TrainingStatus, status_code=202,
             openapi_extra=json_request_body(TrainRequest),
             responses=errors(401, 404, 409, 413, 422, 429, 503))
async def train(name: str, body: TrainBody, response: Response, gw: GatewayDep) -> TrainingStatus:
    """Train model ``name`` on uploaded videos (a background job; it is served as soon as it is ready)."""
    await call(gw.backend.jobs.check_capacity)
    record = await call(gw.submit_training, name, body)
    response.headers["Location"] = f"/v1/models/{name}/train/{record.job_id}"
    return record.training_status(record.video_id)


@router.get("/models/{name}/train/{job_id}", response_model=TrainingStatus, responses=errors(401, 404, 503))
async def training_status(name: str, job_id: str, gw: GatewayDep) -> TrainingStatus:
    """Progress of a training job: stage, epoch, iteration, loss, validation metrics; the result once ready."""
    record = await call(gw.training, name, job_id)
    return record.training_status(record.video_id)
