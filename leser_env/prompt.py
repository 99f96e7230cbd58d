"""Observation -> chat messages: the one prompt every LLM agent (SFT, GRPO, PPO) shares.

The instructions state the action format and the platform's constraints, as the paper's
prompt does: the engine matches every word of a query (conjunctive), expansions should use the
catalog's own wording (the context shows it), 1..5 expansions of at most 100 characters.
"""

from __future__ import annotations

from collections.abc import Mapping

from leser_env.reward import RewardConfig

SYSTEM_TEMPLATE = """You rewrite e-commerce search queries into expansion queries for a product search engine.
The engine returns only products that contain every word of a query, so each expansion should be short and \
use the words the catalog itself uses (the products below show its wording).
Think briefly inside <think>...</think>, then give {min_expansions} to {max_expansions} expansion queries, \
each at most {max_chars} characters, as a JSON list of strings inside <answer>...</answer>.
Example: <think>The shopper wants support for the lower back.</think>\
<answer>["lumbar support office chair", "ergonomic desk chair"]</answer>"""

USER_TEMPLATE = """Query: {query}
Products the engine shows for it:
{context}"""


def render_messages(observation: Mapping[str, str], config: RewardConfig | None = None) -> list[dict[str, str]]:
    """System and user messages for an observation ({"query": ..., "context": ...})."""
    config = config or RewardConfig()
    system = SYSTEM_TEMPLATE.format(min_expansions=1, max_expansions=config.max_expansions, max_chars=config.max_chars)
    context = observation.get("context") or "(none)"
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": USER_TEMPLATE.format(query=observation.get("query", ""), context=context)},
    ]
