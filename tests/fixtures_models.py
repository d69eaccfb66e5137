"""Tiny models built offline for tests: real architecture, real tokenizer, random weights.

``build_tiny_cross_encoder(path)`` writes a two-layer BERT cross-encoder (hidden size 32, one
output logit) and its WordPiece tokenizer to ``path``; sentence-transformers ``CrossEncoder(path)``
and the router's ``cross_encoder`` backend load it like a hub model. Building takes well under a
second and needs no network. The weights are random, so its scores carry no relevance signal:
tests check plumbing (loading, shapes, ranges, determinism), never ranking quality.
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["TINY_VOCAB_WORDS", "build_tiny_cross_encoder"]

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Common English words (and a few domain words the tests use), so that ordinary sentences
# tokenize mostly into whole words; single characters below cover anything else. (A string kept
# readable: as a list literal the formatter would put each word on a line of its own.)
TINY_VOCAB_WORDS: tuple[str, ...] = tuple(
    """
    the of and to a in is it you that he was for on are with as i his they be at one have this
    from or had by hot word but what some we can out other were all there when up use your how said
    an each she which do their time if will way about many then them write would like so these her
    long make thing see him two has look more day could go come did number sound no most people my
    over know water than call first who may down side been now find any new work part take get place
    made live where after back little only round man year came show every good me give our under
    name very through just form sentence great think say help low line differ turn cause much mean
    before move right boy old too same tell does set three want air well also play small end put home
    read hand port large spell add even land here must big high such follow act why ask men change
    went light kind off need house picture try us again animal point mother world near build self
    earth father head stand own page should country found answer school grow study still learn plant
    cover food sun four between state keep eye never last let thought city tree cross farm hard start
    might story saw far sea draw left late run while press close night real life few north open seem
    together next white children begin got walk example ease paper group always music those both mark
    often letter until mile river car feet care second book carry took science eat room friend began
    idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl
    usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
    song measure door product black short numeral class wind question happen complete ship area half
    rock order fire south problem piece told knew pass since top whole king space heard best hour
    better true during hundred five remember step early hold west ground interest reach fast verb sing
    listen six table travel less morning ten simple several vowel toward war lay against pattern slow
    center love person money serve appear road map rain rule govern pull cold notice voice unit power
    town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest
    correct able pound done beauty drive stood contain front teach week final gave green oh quick
    develop ocean warm free minute strong special mind behind clear tail produce fact street inch
    multiply nothing course stay wheel full force blue object decide surface deep moon island foot
    system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran
    check game shape equate miss brought heat snow tire bring yes distant fill east paint language
    among query document passage search rank model capital france paris weather forecast rainy
    sunny python programming code computer cat cats dogs
    """.split()  # noqa: SIM905
)

_SUFFIXES = ["##s", "##es", "##ed", "##ing", "##er", "##est", "##ly", "##ion", "##al", "##y"]
_PUNCTUATION = list(".,;:!?'\"()-/&%$#@*+=<>[]{}_")


def _vocab() -> list[str]:
    seen: dict[str, None] = {}
    for token in [
        *_SPECIAL,
        *_PUNCTUATION,
        *string.digits,
        *string.ascii_lowercase,
        *(f"##{c}" for c in string.ascii_lowercase + string.digits),
        *_SUFFIXES,
        *TINY_VOCAB_WORDS,
    ]:
        seen.setdefault(token, None)
    return list(seen)


def build_tiny_cross_encoder(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random BERT cross-encoder (config, weights, tokenizer) to ``path``; return it.

    Deterministic: the same seed gives the same weights, whatever the global torch RNG state
    (which this leaves untouched).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab = _vocab()
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=512)
    if len(tokenizer.get_vocab()) != len(vocab):
        # transformers 5 ignores ``vocab_file`` here (its BertTokenizerFast takes ``vocab=``, a
        # dict or path) and silently builds a 5-token vocabulary that maps every word to [UNK].
        ids = {token: i for i, token in enumerate(vocab)}
        tokenizer = BertTokenizerFast(vocab=ids, do_lower_case=True, model_max_length=512)
    if len(tokenizer.get_vocab()) != len(vocab):
        raise RuntimeError(f"tokenizer has {len(tokenizer.get_vocab())} tokens, expected {len(vocab)}")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
