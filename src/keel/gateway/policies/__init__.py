"""Routing policies: each is a Provider around Providers, so they compose by wrapping.

``Targeted`` binds a provider to one model (the leaf of every route); ``Retry`` and
``CircuitBreaker`` wrap one target; ``Chain`` tries targets in an order chosen by a
strategy (weighted/sticky, fallback, cost, latency); ``Mirror`` copies traffic to a shadow;
``PromptRender`` fills a registry prompt with the request's variables.
"""

from keel.gateway.policies.breaker import BreakerState, CircuitBreaker
from keel.gateway.policies.chain import Chain, CostOrder, FallbackOrder, LatencyOrder, WeightedOrder
from keel.gateway.policies.mirror import Mirror
from keel.gateway.policies.retry import Retry, RetryBudget
from keel.gateway.policies.target import Targeted

__all__ = [
    "BreakerState",
    "Chain",
    "CircuitBreaker",
    "CostOrder",
    "FallbackOrder",
    "LatencyOrder",
    "Mirror",
    "Retry",
    "RetryBudget",
    "Targeted",
    "WeightedOrder",
]
