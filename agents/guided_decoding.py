"""Guided decoding: the policy writes only completions in the action format.

The action format (``leser_env.actions``) as a regular expression over the completion,
``action_regex``: an optional think block of at most ``MAX_THINK_CHARS`` (200) characters, then an
answer holding a JSON list of 1 to ``max_expansions`` strings of at most ``max_chars`` characters,
each holding a character that is not whitespace and no quote, backslash, control character or
"<", then the end of turn. It accepts the answers the parser accepts as they are written (spaces
around the list's items, inside an expansion's ends, between the tags), so greedy decoding guided
writes exactly what it writes unguided wherever that is valid, and differs only where the answer
would have been refused (or held a JSON escape, a "<", text other than whitespace after the
answer, or a think block over 200 characters, which the format leaves out). Of the 1,656 greedy
answers of eight trained runs' comparisons (runs/v19 to v25), every valid one is in the format as
it was before the length bounds, and every invalid one outside it; with the bounds, runs/v28's
warm-up answers its 207 test queries guided exactly as before.

Why the lengths are bounded: a completion cut by the token limit (``max_new_tokens``, GRPO's
``max_completion_length``) before ``</answer>`` is invalid however it began. Unbounded, a sampled
think block or expansion could run on until the cut: in runs/v28's GRPO, 1-3 invalid (cut) samples
of 32 on 6 of 20 steps carried 22-49% of the step's advantage mass, the update spent on the format
rather than on which expansions to write (where in the completion they were cut was not logged).
Bounded, the format closes the think block after 200 characters (the warm-up's targets write one
sentence, at most 122) and an expansion after ``max_chars``, so a completion runs out of tokens
only when its whole answer is that long.

``ActionFormat`` is a transformers ``LogitsProcessor``: at every generation step it sets the
logit of each token that would leave the format to minus infinity, so sampling and greedy
decoding choose among the tokens that keep the completion a prefix of a valid action; after
``</answer>`` only whitespace and the end-of-turn token are allowed. The automaton over the
tokenizer's vocabulary is built by outlines-core (a few seconds for a 49k vocabulary; one of
the backends of vLLM's guided decoding), once per tokenizer, format and end token in a process.

What it cannot do: count tokens (a completion cut by ``max_new_tokens`` before ``</answer>`` is
still unfinished, invalid) or normalise (an expansion's length is counted as written, spaces
included, so the format may close one the parser, collapsing its spaces, would have taken).
Expansions the parser would merge (the same words in another case) are counted as written, so at
most ``max_expansions`` are written and none is lost. The bounds multiply the automaton (about
5,800 states for the defaults, against 280 unbounded; 2-4 seconds to build on 2 cores, against
0.3).

In training (GRPO's ``guided_decoding``) the log-probabilities are the model's own, before the
mask, as for TRL's guided decoding through vLLM: the ratio and the KL term see the policy the
loss trains, and the mask only decides which completions are drawn.

Vocabularies: byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM) and SentencePiece with byte
fallback (Llama 2, Mistral); special tokens other than the end token are never allowed.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch
from outlines_core import Guide, Index, Vocabulary
from transformers import LogitsProcessor
from transformers.convert_slow_tokenizer import bytes_to_unicode

from leser_env.actions import ActionLimits

# A character of an expansion: no quote or backslash (no JSON escapes), no control character, no
# "<" (no tag inside an answer; ">" is left: catalogs' category paths use it). An expansion may
# start with spaces (the parser trims them) but holds a character that is not whitespace.
EXPANSION_CHARACTER = r'[^"\\\x00-\x1f<]'
SPACE_CHARACTER = r"[^\S\x00-\x1f]"
FIRST_CHARACTER = r'[^"\\\x00-\x1f<\s]'
MAX_THINK_CHARS = 200  # the think block the format allows (the warm-up's targets write at most 122)


def action_regex(limits: ActionLimits | None = None, max_think_chars: int = MAX_THINK_CHARS) -> str:
    """The completions ``ActionFormat`` lets the policy write (a Python and Rust regular expression):
    what ``parse_action`` accepts, less what a regular expression cannot count (distinct
    expansions) or should not allow (escapes, text after the answer, a think block over
    ``max_think_chars`` characters)."""
    limits = limits or ActionLimits()
    # Leading spaces, one character that is not, then up to max_chars - 1 more: at most max_chars
    # counting from the first that is not a space (the parser trims the ends).
    expansion = f'"{SPACE_CHARACTER}*{FIRST_CHARACTER}{EXPANSION_CHARACTER}{{0,{limits.max_chars - 1}}}"'
    more = rf"(\s*,\s*{expansion}){{0,{limits.max_expansions - 1}}}"
    think = rf"<think>[^<]{{0,{max_think_chars}}}</think>"
    return rf"\s*({think}\s*)?<answer>\s*\[\s*{expansion}{more}\s*\]\s*</answer>\s*"


def token_bytes(tokenizer: Any) -> dict[bytes, list[int]]:
    """Each ordinary token's bytes (the ids that spell them): what outlines-core's index reads."""
    special = set(tokenizer.all_special_ids)
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    byte_level = "ByteLevel" in repr(decoder)
    byte_of = {character: byte for byte, character in bytes_to_unicode().items()}
    spelled: dict[bytes, list[int]] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special:
            continue
        if byte_level:
            if any(character not in byte_of for character in token):
                continue  # an added token outside the byte alphabet: never needed for the format
            data = bytes(byte_of[character] for character in token)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            data = bytes([int(token[3:5], 16)])
        else:
            data = token.replace("\u2581", " ").encode()
        if data:
            spelled.setdefault(data, []).append(token_id)
    return spelled


@functools.cache
def _index(tokenizer: Any, end_id: int, regex: str) -> Index:
    return Index(regex, Vocabulary(end_id, token_bytes(tokenizer)))


class ActionFormat(LogitsProcessor):
    """Masks, at each step of ``generate``, the tokens that would take a row out of the action
    format (``action_regex``); one per ``generate`` call (it keeps each row's automaton state)."""

    def __init__(self, tokenizer: Any, end_id: int, limits: ActionLimits | None = None) -> None:
        self.index = _index(tokenizer, end_id, action_regex(limits))
        self.end_id = end_id
        self.guides: list[Guide] = []
        self.finished: list[bool] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.guides:  # the first step: the prompt only
            self.guides = [Guide(self.index) for _ in range(input_ids.shape[0])]
            self.finished = [False] * input_ids.shape[0]
        else:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self.finished[row] or token == self.end_id:
                    self.finished[row] = True
                    continue
                self.guides[row].advance(token)
        words = torch.zeros((len(self.guides), (scores.shape[1] + 31) // 32), dtype=torch.int32)
        for row, guide in enumerate(self.guides):
            if not self.finished[row]:
                guide.write_mask_into(words[row].data_ptr(), words.shape[1], 4)
        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((words.unsqueeze(-1) >> bits) & 1).bool().view(len(self.guides), -1)[:, : scores.shape[1]]
        allowed[torch.tensor(self.finished), self.end_id] = True  # padding after the end, which generate ignores
        return scores.masked_fill(~allowed.to(scores.device), -torch.inf)
