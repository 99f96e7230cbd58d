"""The reward's invariants, one property each, for both presets, on the synthetic catalog with its trained model;
the paper preset against an independent computation of the first published formula; the default's terms by hand."""

from __future__ import annotations

import itertools
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalogs import Catalog
from leser_env.actions import encode_action, normalize_expansion, validate_expansions
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


@pytest.fixture(scope="module", params=["default", "paper"])
def reward(request: pytest.FixtureRequest, engine: SearchEngine, model: RelevanceModel) -> Reward:
    return Reward(engine, model, request.param)


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
    assert breakdown.valid and breakdown.reward == 0.0
    assert breakdown.r_rel == 0.0 and breakdown.r_page == 0.0 and breakdown.r_size == 0.0


@PROPERTY
@given(data=st.data())
def test_the_query_itself_scores_zero_on_catalog_queries(reward: Reward, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    assert reward.score(query, encode_action([query])).reward == 0.0


@PROPERTY
@given(data=st.data())
def test_adding_an_expansion_never_lowers_r_size_or_r_page(reward: Reward, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    expansions = data.draw(expansion_sets(words, 2, 5))
    scored = [reward.score(query, expansions[:n]) for n in range(1, len(expansions) + 1)]
    for term in ("r_size", "r_page"):
        values = [getattr(breakdown, term) for breakdown in scored]
        assert all(later >= earlier for earlier, later in itertools.pairwise(values))
        assert all(value >= 0 for value in values)


@PROPERTY
@given(data=st.data())
def test_total_is_exactly_its_weighted_terms(engine, model, words, query_texts, data) -> None:
    preset = data.draw(st.sampled_from(["default", "paper"]))
    page_weight, size_weight = data.draw(st.sampled_from([0.0, 1.0, 2.5])), data.draw(st.sampled_from([0.0, 0.1, 2.0]))
    scorer = Reward(engine, model, RewardConfig.preset(preset, page_weight=page_weight, size_weight=size_weight))
    query = data.draw(queries(query_texts))
    breakdown = scorer.score(query, data.draw(expansion_sets(words)))
    assert breakdown.reward == breakdown.r_rel + page_weight * breakdown.r_page + size_weight * breakdown.r_size
    assert breakdown.r_rel == math.fsum(breakdown.rel_expansions) / len(breakdown.rel_expansions) - breakdown.rel_query
    tau = scorer.config.relevance_threshold
    judged = scorer.judge(query, breakdown.union_results)
    in_union = sum(judged[pid] >= tau for pid in breakdown.union_results)
    in_query = sum(judged[pid] >= tau for pid in breakdown.query_results)
    assert breakdown.r_size == math.log((1 + in_union) / (1 + in_query))
    if tau == 0.0:  # the paper preset: coverage counts every product
        assert breakdown.r_size == math.log((1 + breakdown.union_size) / (1 + breakdown.query_result_count))


@PROPERTY
@given(data=st.data())
def test_products_judged_below_tau_add_nothing(engine, model, words, query_texts, data) -> None:
    scorer = Reward(engine, model, "default")
    query = data.draw(queries(query_texts))
    expansions = data.draw(expansion_sets(words, 1, 4))
    extra = data.draw(phrases(words))
    before, after = scorer.score(query, expansions), scorer.score(query, [*expansions, extra])
    judged = scorer.judge(query, after.union_results)
    new = set(after.union_results) - set(before.union_results)
    if all(judged[pid] < scorer.config.relevance_threshold for pid in new):
        assert after.r_size == before.r_size and after.r_page == before.r_page


def test_junk_probes_add_nothing_under_the_default_and_coverage_under_the_paper(engine, model, synthetic) -> None:
    default, paper = Reward(engine, model, "default"), Reward(engine, model, "paper")
    zero_result = [text for text in synthetic.queries.values() if not engine.search(text, 1).ids][:40]
    checked = 0
    for query in zero_result:
        for probe in (["set"], ["black"]):
            gated = default.score(query, probe)
            judged = default.judge(query, gated.union_results)
            if gated.union_results and all(score < 0.5 for score in judged.values()):
                checked += 1
                assert gated.r_size == 0.0 and gated.r_page == 0.0
                assert paper.score(query, probe).r_size > 0.0  # ungated coverage pays junk
    assert checked >= 5, "the synthetic catalog should have junk probes the judge scores below tau"


def paper_reward_by_hand(engine: SearchEngine, model: RelevanceModel, query: str, expansions: list[str]) -> float:
    """The first published reward, computed from the engine and the model directly: r_rel + 0.1 r_size."""

    def results(text: str) -> tuple[str, ...]:
        return engine.search_terms_many([engine.analyze(text)], 100, "and")[0].ids

    def rel(ids: tuple[str, ...]) -> float:
        if not ids:
            return 0.0
        rows = [engine.catalog.row_of[pid] for pid in ids[:10]]
        return math.fsum(model.score(query, rows).tolist()) / len(rows)

    base = results(query)
    distinct = list({normalize_expansion(text).casefold(): normalize_expansion(text) for text in expansions}.values())
    union = set(base).union(*(results(text) for text in distinct))
    r_rel = math.fsum(rel(results(text)) for text in distinct) / len(distinct) - rel(base)
    return r_rel + 0.1 * math.log((1 + len(union)) / (1 + len(base)))


@PROPERTY
@given(data=st.data())
def test_the_paper_preset_is_the_first_published_reward(engine, model, words, query_texts, data) -> None:
    query = data.draw(queries(query_texts))
    expansions = data.draw(expansion_sets(words))
    scored = Reward(engine, model, "paper").score(query, expansions).reward
    assert scored == pytest.approx(paper_reward_by_hand(engine, model, query, expansions), abs=1e-12)


def test_the_default_terms_by_hand_on_a_small_catalog(tiny_catalog: Catalog) -> None:
    engine, model = SearchEngine(tiny_catalog), RelevanceModel.load_or_train(tiny_catalog)
    reward = Reward(engine, model, RewardConfig(relevance_threshold=0.3, rel_k=2))
    query, expansions = "office chair", ["sofa", "desk"]
    s = dict(zip((p.id for p in tiny_catalog.products), model.score(query, list(range(5))).tolist(), strict=True))
    results = {text: engine.search(text, 100).ids for text in [query, *expansions]}
    union = set(results[query]).union(*(results[text] for text in expansions))

    def rel(ids) -> float:
        return sum(s[pid] for pid in ids[:2]) / len(ids[:2]) if ids else 0.0

    def page(ids) -> float:
        return sum(sorted((s[pid] for pid in ids if s[pid] >= 0.3), reverse=True)[:2]) / 2

    def relevant(ids) -> int:
        return sum(s[pid] >= 0.3 for pid in ids)

    breakdown = reward.score(query, expansions)
    assert breakdown.r_rel == pytest.approx((rel(results["sofa"]) + rel(results["desk"])) / 2 - rel(results[query]))
    assert breakdown.r_page == pytest.approx(page(union) - page(results[query]))
    assert breakdown.r_size == pytest.approx(math.log((1 + relevant(union)) / (1 + relevant(results[query]))))
    assert breakdown.reward == pytest.approx(breakdown.r_rel + breakdown.r_page + 0.1 * breakdown.r_size)
    assert set(breakdown.served_results) <= union and len(breakdown.served_results) == min(len(union), 10)
    assert [s[pid] for pid in breakdown.served_results] == sorted((s[pid] for pid in union), reverse=True)[:10]


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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rel_k": 20, "depth": 10}, "need rel_k <= depth, got rel_k=20, depth=10"),
        ({"mode": "xor"}, "mode must be 'and' or 'or', not 'xor'"),
    ],
)
def test_a_reward_config_inconsistent_across_fields_or_with_an_unknown_mode_is_refused(
    fields: dict, message: str
) -> None:
    """The checks across fields and of the match mode; each field's range is in test_policy's
    table of every config's ranges (a penalty a valid action could undercut among them)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        RewardConfig(**fields)


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
