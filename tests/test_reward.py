"""The reward's invariants (DESIGN.md), one property each, on the synthetic catalog with its trained model."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalogs import Catalog
from leser_env.actions import encode_action, validate_expansions
from leser_env.relevance import RelevanceModel
from leser_env.reward import Reward, RewardConfig
from leser_env.search import SearchEngine

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def engine(synthetic: Catalog) -> SearchEngine:
    return SearchEngine(synthetic)


@pytest.fixture(scope="module")
def model(synthetic: Catalog) -> RelevanceModel:
    return RelevanceModel.load_or_train(synthetic)


@pytest.fixture(scope="module")
def reward(engine: SearchEngine, model: RelevanceModel) -> Reward:
    return Reward(engine, model)


@pytest.fixture(scope="module")
def words(synthetic: Catalog) -> list[str]:
    vocabulary = sorted({word.lower() for p in synthetic.products[:3000] for word in p.title.split() if word.isalpha()})
    return vocabulary


def queries(synthetic_texts: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(synthetic_texts)


@pytest.fixture(scope="module")
def query_texts(synthetic: Catalog) -> list[str]:
    return list(synthetic.queries.values())[:400]


def phrases(words: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(words), min_size=1, max_size=4).map(" ".join)


def expansion_sets(words: list[str], min_size: int = 1, max_size: int = 5) -> st.SearchStrategy[list[str]]:
    return st.lists(phrases(words), min_size=min_size, max_size=max_size, unique_by=str.casefold)


@PROPERTY
@given(data=st.data())
def test_order_of_expansions_does_not_matter(reward: Reward, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    expansions = data.draw(expansion_sets(words, 2, 5))
    base = reward.score(query, expansions)
    for permutation in itertools.islice(itertools.permutations(expansions), 6):
        assert reward.score(query, list(permutation)).reward == base.reward


@PROPERTY
@given(data=st.data())
def test_duplicates_do_not_matter(reward: Reward, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    expansions = data.draw(expansion_sets(words, 1, 4))
    repeated = [*expansions, f"  {expansions[0].upper()} ", expansions[0]]
    assert reward.score(query, repeated).reward == reward.score(query, expansions).reward


@PROPERTY
@given(query=st.text(min_size=1, max_size=100).filter(lambda text: validate_expansions([text]).valid))
def test_the_query_itself_scores_exactly_zero(reward: Reward, query: str) -> None:
    breakdown = reward.score(query, [query])
    assert breakdown.valid and breakdown.reward == 0.0 and breakdown.r_rel == 0.0 and breakdown.r_size == 0.0


@PROPERTY
@given(data=st.data())
def test_the_query_itself_scores_zero_on_catalog_queries(reward: Reward, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    assert reward.score(query, encode_action([query])).reward == 0.0


@PROPERTY
@given(data=st.data())
def test_adding_an_expansion_never_lowers_r_size(reward: Reward, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    expansions = data.draw(expansion_sets(words, 2, 5))
    sizes = [reward.score(query, expansions[:n]).r_size for n in range(1, len(expansions) + 1)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(sizes))
    assert all(size >= 0 for size in sizes)


@PROPERTY
@given(data=st.data())
def test_total_is_r_rel_plus_lambda_r_size(engine, model, words, query_texts, data) -> None:
    weight = data.draw(st.sampled_from([0.0, 0.1, 0.5, 2.0]))
    scorer = Reward(engine, model, RewardConfig(size_weight=weight))
    breakdown = scorer.score(data.draw(queries(query_texts)), data.draw(expansion_sets(words)))
    assert breakdown.reward == breakdown.r_rel + weight * breakdown.r_size
    assert breakdown.r_rel == math.fsum(breakdown.rel_expansions) / len(breakdown.rel_expansions) - breakdown.rel_query
    assert breakdown.r_size == math.log((1 + breakdown.union_size) / (1 + breakdown.query_result_count))


@PROPERTY
@given(data=st.data())
def test_invalid_is_below_every_valid(reward: Reward, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    valid = reward.score(query, data.draw(expansion_sets(words)))
    invalid_action = data.draw(
        st.sampled_from(
            ["", "sofa", "<answer>[]</answer>", '<answer>["a"', '["sofa"]', '<answer>["' + "x" * 200 + '"]</answer>']
        )
    )
    invalid = reward.score(query, invalid_action)
    assert not invalid.valid and invalid.reward == reward.config.format_penalty
    assert valid.valid and invalid.reward < -1.0 <= valid.reward


def test_a_penalty_a_valid_action_could_undercut_is_refused() -> None:
    with pytest.raises(ValueError, match="format_penalty must be below -1"):
        RewardConfig(format_penalty=-0.5)


@PROPERTY
@given(data=st.data())
def test_cached_uncached_and_group_scored_agree(engine, model, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    group = [data.draw(expansion_sets(words)) for _ in range(4)]
    group.append(group[0][::-1])  # the same set again, reordered
    group.append("not an action")
    warm = Reward(engine, model)
    scored_together = warm.score_group(query, group)
    again_cached = [warm.score(query, action) for action in group]
    engine.clear_cache()
    scored_alone = [Reward(engine, model).score(query, action) for action in group]
    assert scored_together == again_cached == scored_alone


@PROPERTY
@given(query=st.text(max_size=300), action=st.text(max_size=300))
def test_nothing_raises_on_arbitrary_text(reward: Reward, query: str, action: str) -> None:
    breakdown = reward.score(query, action)
    assert math.isfinite(breakdown.reward)
    for wrapped in (encode_action([action[:100] or "x"]), [action[:100] or "x"]):
        assert math.isfinite(reward.score(query, wrapped).reward)


@pytest.mark.parametrize(
    "text", ['title:"sofa" AND (NOT -chair)', "\\", "🛋️" * 50, "x" * 10_000, "", " \n\t ", "lone \ud800 surrogate"]
)
def test_query_syntax_and_huge_strings(reward: Reward, text: str) -> None:
    for query, action in [(text, ["sofa"]), ("grey sofa", [text[:100] or "x"]), (text, text)]:
        assert math.isfinite(reward.score(query, action).reward)


def test_expansions_that_close_the_vocabulary_gap_earn_reward(reward: Reward, synthetic: Catalog) -> None:
    """The point of the environment: catalog wording beats the shopper's wording, and copying does not."""
    from catalogs.synthetic import query_kinds

    kinds = query_kinds()
    gains = []
    for query_id, text in synthetic.queries.items():
        if kinds.get(query_id) != "problem":
            continue
        best = sorted(synthetic.qrels[query_id].items(), key=lambda item: -item[1])[0][0]
        title = synthetic.product(best).title
        gains.append(reward.score(text, [title]).reward)
        if len(gains) == 100:
            break
    assert sum(gains) / len(gains) > 0.05, "a relevant product's own wording should beat the vague query"
