"""Delivering webhook events: every worker runs a sender thread that leases due deliveries and POSTs them.

Deliveries are pending in the job store (Redis: ``{p}:{q}:hooks``) from the moment their job finished, so they
survive any process. A sender leases a batch (each is due again when the lease ends: a sender that died
mid-delivery loses nothing, another sender retakes it), checks the URL against the allowlist again (DNS can
change), signs and sends it; a 2xx answer ends it, anything else is retried with exponential back-off (with
jitter) until ``R2_WEBHOOK_MAX_ATTEMPTS``. At least once: a receiver can get an event twice and should
dedupe on its id.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time

import httpx

from service.contract.errors import ServiceError
from service.contract.metrics import WEBHOOKS, sample
from service.contract.settings import Settings
from service.contract.urls import UrlPolicy
from service.contract.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, PendingHook, event_body, sign
from service.store.jobs import JobStore
from service.store.records import Records

from . import outbound

log = logging.getLogger("service.worker")

_BATCH = 16  # deliveries leased at once
_IDLE_S = 0.5  # wait between two looks when nothing was due


class WebhookSender:
    """Sends the due deliveries of one job store."""

    def __init__(self, settings: Settings, jobs: JobStore, records: Records) -> None:
        self.settings, self.jobs, self.records = settings, jobs, records
        self.policy = UrlPolicy(settings.fetch_allowlist)
        self.lease_s = 2 * settings.webhook_timeout_s + 5  # longer than one attempt can take
        self._client = outbound.client(settings.webhook_timeout_s, settings.webhook_timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def backoff_s(self, attempts: int) -> float:
        """Wait before the next attempt after ``attempts`` failed ones."""
        s = self.settings
        wait = min(s.webhook_backoff_max_s, s.webhook_backoff_s * 2.0 ** (attempts - 1))
        return float(wait * random.uniform(0.75, 1.25))

    def send_due(self) -> int:
        """Lease the due deliveries and try each once; returns how many were tried."""
        hooks = self.jobs.due_hooks(self.lease_s, _BATCH)
        for hook in hooks:
            self.deliver(hook)
        return len(hooks)

    def deliver(self, hook: PendingHook) -> bool:
        try:
            self.post(hook)
        except Exception as err:  # the receiver failed, or the URL is no longer allowed: count and retry
            attempts = hook.attempts + 1
            if attempts >= self.settings.webhook_max_attempts:
                log.error("webhook %s to %s given up after %d attempts: %s", hook.hook_id, hook.url[:100], attempts,
                          err)
                self.jobs.hook_done(hook.hook_id)
                self._count("given_up")
            else:
                wait = self.backoff_s(attempts)
                log.warning("webhook %s to %s failed (%s); attempt %d in %.1f s", hook.hook_id, hook.url[:100], err,
                            attempts + 1, wait)
                self.jobs.hook_retry(dataclasses.replace(hook, attempts=attempts), time.time() + wait)
                self._count("failed")
            return False
        self.jobs.hook_done(hook.hook_id)
        self._count("delivered")
        return True

    def post(self, hook: PendingHook) -> None:
        """One signed attempt; raises unless the receiver answered 2xx."""
        secret = self.settings.webhook_secret
        if secret is None:
            raise ServiceError("R2_WEBHOOK_SECRET is not set: events cannot be signed", code="webhook_unsigned")
        checked = self.policy.check(hook.url, what="the callback URL")  # again: its DNS may have changed
        body = event_body(hook)
        timestamp = int(time.time())
        url, headers, extensions = outbound.pinned(checked, {
            "Content-Type": "application/json", ID_HEADER: hook.hook_id, TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret.get_secret_value(), timestamp, body)})
        response = self._client.post(url, content=body, headers=headers, extensions=extensions)
        if not 200 <= response.status_code < 300:
            raise httpx.HTTPStatusError(f"the receiver answered {response.status_code}", request=response.request,
                                        response=response)

    def _count(self, outcome: str) -> None:
        try:
            self.records.add_metrics({sample(WEBHOOKS, outcome=outcome): 1.0})
        except Exception as err:  # metrics never stop a delivery
            log.debug("webhook metric not written: %s", err)

    # ------------------------------------------------------------------------------------------------ thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="r2-webhooks", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                tried = self.send_due()
            except Exception as err:  # Redis down: keep the thread, look again later
                log.warning("webhook sender: %s", err)
                tried = 0
            if tried < _BATCH:
                self._stop.wait(_IDLE_S)

    def stop(self) -> None:
        """Stop after the delivery in hand (a leased one not sent is due again when its lease ends)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.settings.webhook_timeout_s + 5)
        self._client.close()
