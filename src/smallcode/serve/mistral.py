"""Mistral's ``/v1/fim/completions`` (Continue's autocomplete calls it): a fill-in-the-middle request,
answered in the chat completion's shape, as Mistral answers it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from smallcode.serve.openai import chat_completion
from smallcode.serve.protocol import FimRequest
from smallcode.serve.responses import ERRORS
from smallcode.serve.service import Service, current_service

router = APIRouter()


@router.post("/v1/fim/completions", responses=ERRORS)
async def fim(body: FimRequest, request: Request, service: Annotated[Service, Depends(current_service)]) -> Any:
    return await chat_completion(service, service.fim_job(body), body, request, logprobs=False, k=0)
