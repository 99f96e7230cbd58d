"""Observation -> chat messages: the one prompt every LLM agent (SFT, GRPO, PPO) shares.

The instructions state the action format and the platform's constraints, as the paper's
prompt does: the engine matches every word of a query (conjunctive), expansions should use the
catalog's own wording (the context shows it), 1..5 expansions of at most 100 characters. The
user message holds the query, the product context (headed by what it is: the query's results,
or, when ``partial_match`` is set, products matching only some of its words) and the feedback
evidence lines when the observation has them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from leser_env.actions import ActionLimits

SYSTEM_TEMPLATE = """You rewrite e-commerce search queries into expansion queries for a product search engine.
The engine returns only products that contain every word of a query, so each expansion should be short and \
use the words the catalog itself uses (the products below show its wording).
Think briefly inside <think>...</think>, then give {min_expansions} to {max_expansions} expansion queries, \
each at most {max_chars} characters, as a JSON list of strings inside <answer>...</answer>.
Example: <think>The shopper wants support for the lower back.</think>\
<answer>["lumbar support office chair", "ergonomic desk chair"]</answer>"""

USER_TEMPLATE = """Query: {query}
{heading}
{context}"""
RESULTS_HEADING = "Products the engine shows for it:"
PARTIAL_MATCH_HEADING = "No product has every word of the query. Products with some of its words:"


def render_messages(observation: Mapping[str, Any], limits: ActionLimits | None = None) -> list[dict[str, str]]:
    """System and user messages for an observation (query, context, partial_match, evidence)."""
    limits = limits or ActionLimits()
    system = SYSTEM_TEMPLATE.format(min_expansions=1, max_expansions=limits.max_expansions, max_chars=limits.max_chars)
    heading = PARTIAL_MATCH_HEADING if observation.get("partial_match") else RESULTS_HEADING
    user = USER_TEMPLATE.format(
        query=observation.get("query", ""), heading=heading, context=observation.get("context") or "(none)"
    )
    evidence = observation.get("evidence")
    if evidence:
        user += "\n" + evidence
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def fit_observation(
    observation: Mapping[str, Any], prompt_tokens: Callable[[Mapping[str, Any]], int], max_tokens: int
) -> dict[str, Any]:
    """The observation with its product context cut line by line from the end until the prompt
    (``prompt_tokens`` counts it) fits in ``max_tokens``; the query and evidence are kept whole.
    Our policy and the TRL dataset both call this, so both see the same prompt."""
    fitted = dict(observation)
    while prompt_tokens(fitted) > max_tokens and fitted.get("context"):
        context = fitted["context"]
        fitted["context"] = context.rsplit("\n", 1)[0] if "\n" in context else ""
    return fitted
