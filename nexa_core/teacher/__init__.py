"""The teacher: who writes the question/answer pairs, and how one response per request is collected.

Modules, each importing only the ones above it:
- types.py: the backend contract (Completion, TeacherBackend, BatchResults), its errors, request_hash
- replies.py: reading a reply (json_reply, parse_pairs) and why a billed one is unusable
- pricing.py: what tokens cost (Pricing, price_for, the shipped price table), and a paid model without a price
- policy.py: how a partition is collected (CollectPolicy), how far it got (CollectStats, CollectionStopped)
- ledger.py: the Delta tables behind collection (TeacherLedger)
- heuristic.py: the embedded offline teacher (HeuristicTeacher), a rule set, not a language model
- openai_client.py: any OpenAI-compatible endpoint (OpenAICompatibleTeacher)
- calls.py: concurrent calls for one partition; batch.py: the Batch API path
- collect.py: collect_responses, the entry point: cache first, then calls or batch
"""

from nexa_core.teacher.collect import collect_responses, keyed_requests
from nexa_core.teacher.heuristic import HeuristicTeacher
from nexa_core.teacher.ledger import TeacherLedger
from nexa_core.teacher.openai_client import OpenAICompatibleTeacher
from nexa_core.teacher.policy import CollectionStopped, CollectPolicy, CollectStats
from nexa_core.teacher.pricing import PRICES_FILE, Pricing, UnpricedBudget, price_for, unpriced_warning
from nexa_core.teacher.replies import UNUSABLE, json_reply, parse_pairs, unusable_reason
from nexa_core.teacher.types import (
    BatchResults,
    BudgetExceeded,
    Completion,
    PairBrief,
    RequestRejected,
    RequestsFailed,
    RetryableError,
    TeacherBackend,
    TeacherResponseError,
    TeacherUnavailable,
    request_hash,
)

__all__ = [
    "BatchResults",
    "BudgetExceeded",
    "CollectPolicy",
    "CollectStats",
    "CollectionStopped",
    "Completion",
    "HeuristicTeacher",
    "OpenAICompatibleTeacher",
    "PRICES_FILE",
    "PairBrief",
    "Pricing",
    "RequestRejected",
    "RequestsFailed",
    "RetryableError",
    "TeacherBackend",
    "TeacherLedger",
    "TeacherResponseError",
    "TeacherUnavailable",
    "UNUSABLE",
    "UnpricedBudget",
    "collect_responses",
    "json_reply",
    "keyed_requests",
    "parse_pairs",
    "price_for",
    "request_hash",
    "unpriced_warning",
    "unusable_reason",
]
