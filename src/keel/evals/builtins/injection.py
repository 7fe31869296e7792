"""PromptInjection: instructions smuggled into user input, retrieved documents or tool output.

A local, deterministic detector: text is normalized and de-obfuscated (NFKC, zero-width
characters dropped, Cyrillic/Greek look-alikes mapped to Latin, leetspeak undone, s p a c e d
letters joined; Base64, Base32, Ascii85, hex, binary, Morse and %-encoded runs decoded when
they decode to readable text; rot13 and reversed text looked at when they read more like
language than the original), then scored by a logistic model over word n-grams, character
n-grams and hand-written attack cues (override, persona/jailbreak, prompt extraction,
exfiltration, fake delimiters, and indirect-injection cues: instructions addressed to an AI
inside data, tool calls demanded by data, "in every future reply", memory persistence,
"decode and follow"; English, German, French, Spanish, Italian). The weights ship in
``prompt_injection.json``, trained by ``bench/train_prompt_injection.py`` on Tensor Trust
attacks, hand-written attacks and the train half of bastioncorpus, against benign
QQP/MRPC/HaluEval text, Tensor Trust defences and hand-written benign prompts full of trigger
words. Measured figures (on the held-out half of bastioncorpus):
docs/bench-evaluators-safety.md.

Score value = 1 - p(injection) (higher is safer); the row passes when p <= cut, i.e. when the
value >= threshold = 1 - cut (so a suite's ``threshold:`` override works as for any evaluator).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import itertools
import json
import math
import re
import unicodedata
import urllib.parse
from importlib import resources
from typing import Any

from keel.evals.base import EvalResult, Evaluator

WEIGHTS_FILE = "prompt_injection.json"

_ZW = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
_CONFUSABLE = str.maketrans(
    "аеорсухіјѕԁɡոԛѵԝАВЕКМНОРСТХІЈЅαβεικνορτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdgnqvwABEKMHOPCTXIJSabeiknoptuxABEZHIKMNOPTYX",
)
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_SPACED = re.compile(r"\b(?:[A-Za-z][ ._*-]){3,}[A-Za-z]\b")
_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){8,}\b")
_TOKEN = re.compile(r"[a-zà-ÿß]+|\d+|[^\sa-zà-ÿß\d]", re.IGNORECASE)

# (name, pattern) - cues of an attack, as features for the model (not verdicts on their own)
CUES: list[tuple[str, str]] = [
    (
        "override",
        r"\b(ignore|disregard|forget|skip|bypass|override|overrule|drop|abandon|discard|neglect)\w*\s+(?:\w+\s+){0,4}?(instructions?|rules?|directions?|prompts?|guidelines?|guardrails?|context|commands?|constraints?|programming|directives?|polic(?:y|ies)|everything|anything)\b",
    ),
    (
        "override_scope",
        r"\b(previous|prior|above|earlier|preceding|initial|original|system|all (?:of )?(?:the|your))\s+(instructions?|rules?|prompts?|directions?|guidelines?|messages?|context)",
    ),
    (
        "new_instructions",
        r"\b(new|updated|real|actual|true|secret|hidden|following)\s+(instructions?|rules?|task|directive|orders?)\b\s*[:\-]",
    ),
    (
        "from_now_on",
        r"\b(from now on|henceforth|for the rest of this conversation|starting now|going forward)\b",
    ),
    (
        "persona",
        r"\byou are (now|no longer|free|dan\b|an? (?:unfiltered|uncensored|unrestricted|evil|jailbroken)|in (?:developer|god|admin|debug|maintenance) mode)",
    ),
    (
        "jailbreak_words",
        r"\b(dan|do anything now|developer mode|god mode|jailbr[eo]\w*|unfiltered|uncensored|unrestricted|no (?:restrictions|limits|limitations|filters|rules|guidelines|ethics|morals)|without (?:any )?(?:restrictions|limits|filters|censorship|rules))\b",
    ),
    (
        "pretend",
        r"\b(pretend|act as if|imagine) (?:that )?(you|there) (are|is|have|were) (no|not|an? (?:ai|model) without)",
    ),
    (
        "extract",
        r"\b(reveal|print|show|output|repeat|tell|give|leak|dump|display|disclose|share|expose|recite|write out|spell out|list)\s+(?:me\s+|us\s+)?(?:all\s+|back\s+|out\s+)?(?:of\s+)?(your|the|my|its|any)\s+(?:\w+\s+){0,2}(system prompt|prompt|instructions?|rules?|password|passcode|secret|api[ _-]?keys?|access code|credentials?|configuration|guidelines|hidden|initial)",
    ),
    (
        "above_text",
        r"\b(words|text|everything|instructions|content|message)s?\s+(?:written\s+|stated\s+)?(above|before this|preceding|so far|at the (?:start|beginning))\b",
    ),
    ("system_prompt", r"\b(system|initial|hidden|original|developer|pre)[ -]?prompt\b"),
    (
        "delimiter",
        r"(</?(?:system|instructions?|im_start|im_end|user|assistant|admin|s)>|\[/?(?:system|inst|admin)\]|<\|[a-z_]+\|>|#{2,}\s*(?:new |system |admin )?(?:instructions?|system|prompt)|\b(?:end|begin) of (?:prompt|instructions|system|context|document)\b|-{3,}\s*(?:system|admin|new))",
    ),
    (
        "addressed_ai",
        r"\b(ai|assistant|chatbot|model|llm|agent|gpt|claude|bot)s?\b[^.\n]{0,40}\b(must|should|shall|will now|needs? to|are instructed|please)\b",
    ),
    (
        "note_to_ai",
        r"\b(note|message|instruction|attention|important)\s+(to|for)\s+(the\s+)?(ai|assistant|model|llm|agent|chatbot|bot)\b",
    ),
    (
        "exfil",
        r"\b(send|forward|email|e-mail|post|upload|transmit|exfiltrate|leak|copy)\b[^.\n]{0,60}\b(to|at|into)\s+(https?://|www\.|\S+@\S+\.\w+|\w+\.(?:com|net|org|io|ru|xyz))",
    ),
    ("url_md_image", r"!\[[^\]]*\]\(https?://[^)]*[?&][a-z_]+=\{?"),
    (
        "secrets",
        r"\b(password|passwords|credentials|api[ _-]?keys?|tokens?|private key|ssh key|credit card numbers|customer (?:data|database|records))\b",
    ),
    ("access_granted", r"access\s+granted"),
    (
        "say_exactly",
        r"\b(say|respond with|reply with|output|print|begin your (?:reply|response) with|start your (?:reply|response) with)\s+(?:only\s+|exactly\s+|just\s+)?[\"'“«]",
    ),
    (
        "do_not_tell",
        r"\b(do not|don't|never)\s+(tell|inform|mention|alert|notify)\s+(the\s+)?(user|human|customer|anyone)",
    ),
    ("role_switch", r"^\s*(system|admin|developer|root)\s*[:>]"),
    (
        "de_override",
        r"\b(ignorier\w*|vergiss|vergessen sie|missachte\w*|übergeh\w*)\b[^.\n]{0,50}\b(anweisung\w*|regeln|befehl\w*|vorgaben|instruktion\w*|alles)",
    ),
    (
        "fr_override",
        r"\b(ignore[rz]?|oublie[rz]?|ne tiens pas compte|fais abstraction)\b[^.\n]{0,50}\b(instructions?|règles|consignes|directives|tout)",
    ),
    (
        "es_override",
        r"\b(ignora\w*|olvida\w*|haz caso omiso|omite)\b[^.\n]{0,50}\b(instrucciones|reglas|indicaciones|directrices|todo)",
    ),
    (
        "it_override",
        r"\b(ignora\w*|dimentica\w*|trascura)\b[^.\n]{0,50}\b(istruzioni|regole|indicazioni|direttive|tutto)",
    ),
    (
        "ml_extract",
        r"\b(zeige?|verrate|gib|révèle|montre|affiche|revela|muestra|dime|rivela|mostra|dimmi)\w*\b[^.\n]{0,40}\b(system-?prompt|prompt|passwort|mot de passe|contraseña|password|anweisungen|instructions|instrucciones|istruzioni)",
    ),
    (
        "ml_persona",
        r"\b(du bist jetzt|tu es maintenant|ahora eres|ora sei|sei ora|modo desarrollador|mode développeur|entwicklermodus|modalità sviluppatore|sin restricciones|sans restrictions|ohne einschränkungen|senza restrizioni)\b",
    ),
    # indirect injection: instructions aimed at an agent inside documents and tool output
    (
        "tool_call",
        r"\b(call|invoke|run|execute|trigger)\s+(?:the\s+)?`?[a-z]+_[a-z_]+\b|\bcall the \w+ (?:tool|function|api|endpoint)\b",
    ),
    (
        "before_reply",
        r"\bbefore (?:you |the assistant |the agent )?(?:respond|reply|answer|continu|summari[sz])\w*|\bwhen you (?:read|process|summari[sz]e|see|parse) this\b",
    ),
    (
        "every_reply",
        r"\b(?:in|to|into|at the end of|with) (?:every|each|all|any) (?:future |subsequent |later )?(?:reply|replies|response|responses|answer|answers|summary|summaries|report|reports|message|messages|output|outputs)\b",
    ),
    (
        "persist",
        r"\b(?:save|store|remember|persist|write)\b[^.\n]{0,40}\b(?:(?:your|the) memory|for (?:all|every) future|future (?:tasks|sessions|conversations|replies))\b|\bnote to self\b|\b(?:memory|persisted)\b[^.\n]{0,20}\b(?:update|instruction|rule)s?\b",
    ),
    (
        "ai_reader",
        r"\b(?:ai|llm|agents?|assistants?|bots?|models?|ai systems?|copilots?)\b[^.\n]{0,25}\b(?:reading|processing|integrating|parsing|summari[sz]ing|handling|seeing|using|ingesting) (?:this|these|the following)\b|\bto (?:any|all|every) (?:ai|llm|agent|assistant|model|bot)s?\b",
    ),
    (
        "verbatim",
        r"\b(verbatim|word for word|word-for-word|wortwörtlich|wörtlich|palabra por palabra|mot pour mot|mot à mot|parola per parola)\b",
    ),
    (
        "decode_follow",
        r"\b(?:decode|decipher|translate|convert|unscramble|reverse)\b[^\n]{0,60}\b(?:follow|do (?:exactly )?what|execute|obey|carry out|comply|act on|run)\b",
    ),
    (
        "send_out",
        r"\b(?:send|post|upload|forward|transmit|push|sync|export|exfiltrate)\w*\b[^\n]{0,80}(?:https?://|\bwebhook\b|\bexternal(?:ly)?\b|\S+@\S+\.\w+)",
    ),
    (
        "ml_send_out",
        r"\b(?:envoie\w*|envoy\w*|transf[eè]r\w*|sende\w*|schick\w*|leite\w* weiter|env[ií]a\w*|manda\w*|invia\w*|inoltra\w*)\b[^\n]{0,80}(?:@|https?://|\bextern\w*|\besterno\b)",
    ),
    (
        "void_instructions",
        r"\b(?:messages?|instructions?|prompts?|rules|guidelines|restrictions|policies|protocols?)\b[^.\n]{0,40}\b(?:are|is|have been|has been|were)\s+(?:now\s+)?(?:compromised|invalid|void|revoked|obsolete|outdated|disabled|lifted|suspended|cancel+ed)\b",
    ),
    (
        "rules_dont_apply",
        r"\b(?:rules|guidelines|restrictions|policies|safety)\b[^.\n]{0,30}\b(?:do not|don't|no longer|not) (?:apply|matter)\b|\b(?:non valgono|no aplican|ne s'appliquent pas|gelten nicht)\b",
    ),
    ("as_if", r"\b(?:respond|answer|reply|act|behave|write)\w* as if (?:you|there)\b"),
    (
        "system_note",
        r"\b(?:system|admin|developer|security)\s+(?:note|notice|message|alert|update|override)\b|\b(?:note|nota|notiz) (?:système|di sistema|del sistema|des systems)\b",
    ),
]
_CUES = [(n, re.compile(p, re.IGNORECASE | re.MULTILINE)) for n, p in CUES]


_B32 = re.compile(r"(?<![A-Za-z0-9])[A-Z2-7]{24,}={0,6}(?![A-Za-z0-9])")
_A85 = re.compile(r"<~(.{8,}?)~>", re.DOTALL)
_BIN = re.compile(r"(?<![01])(?:[01]{8}[ ]?){4,}")
_MORSE = re.compile(r"(?<![\w.-])(?:[.-]{1,6}(?: {1,3}| ?/ ?)){5,}[.-]{1,6}(?![\w.-])")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_MORSE_TABLE = dict(
    zip(
        [
            ".-",
            "-...",
            "-.-.",
            "-..",
            ".",
            "..-.",
            "--.",
            "....",
            "..",
            ".---",
            "-.-",
            ".-..",
            "--",
            "-.",
            "---",
            ".--.",
            "--.-",
            ".-.",
            "...",
            "-",
            "..-",
            "...-",
            ".--",
            "-..-",
            "-.--",
            "--..",
            "-----",
            ".----",
            "..---",
            "...--",
            "....-",
            ".....",
            "-....",
            "--...",
            "---..",
            "----.",
            ".-.-.-",
            "--..--",
            ".--.-.",
            "..--..",
            "-.-.--",
        ],
        "abcdefghijklmnopqrstuvwxyz0123456789.,@?!",
        strict=True,
    )
)
# frequent English words (and attack vocabulary): tells a decoded or rotated text is language
_COMMON = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "to",
        "of",
        "in",
        "on",
        "for",
        "is",
        "are",
        "be",
        "you",
        "your",
        "this",
        "that",
        "it",
        "all",
        "with",
        "as",
        "at",
        "by",
        "from",
        "now",
        "not",
        "no",
        "do",
        "must",
        "will",
        "should",
        "please",
        "any",
        "every",
        "ignore",
        "previous",
        "instructions",
        "instruction",
        "prompt",
        "system",
        "rules",
        "reveal",
        "send",
        "call",
        "password",
        "secret",
        "print",
        "tell",
        "me",
        "show",
    ]
)


def _wordiness(text: str) -> int:
    return sum(w in _COMMON for w in re.findall(r"[a-z]+", text.lower()))


def _readable(raw: bytes) -> str | None:
    """``raw`` as text when it reads like language (mostly printable ASCII, several words)."""
    if len(raw) < 6:
        return None
    dec = raw.decode("utf-8", "replace")
    good = sum(c.isprintable() or c in "\n\t" for c in dec) - dec.count("\ufffd")
    if good / len(dec) < 0.95 or len(re.findall(r"[A-Za-z]{2,}", dec)) < 2:
        return None
    return dec


def _decode_runs(text: str) -> list[str]:
    """Readable plaintexts of Base64, Base32, Ascii85, hex, binary, Morse and %-encoded runs."""
    out: list[str] = []

    def take(raw: bytes | None) -> None:
        dec = _readable(raw) if raw else None
        if dec:
            out.append(dec)

    for m in _B64.finditer(text):
        s = m.group(0)
        try:
            take(base64.b64decode(s + "=" * (-len(s) % 4), validate=False))
        except (binascii.Error, ValueError):
            continue
    for m in _B32.finditer(text):
        s = m.group(0).rstrip("=")
        try:
            take(base64.b32decode(s + "=" * (-len(s) % 8)))
        except (binascii.Error, ValueError):
            continue
    for m in _A85.finditer(text):
        try:
            take(base64.a85decode(m.group(1).encode("ascii", "ignore")))
        except (binascii.Error, ValueError):
            continue
    for m in _HEX.finditer(text):
        h = re.sub(r"[ :]", "", m.group(0))
        try:
            take(bytes.fromhex(h[: len(h) // 2 * 2]))
        except ValueError:
            continue
    for m in _BIN.finditer(text):
        bits = m.group(0).replace(" ", "")
        take(bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8)))
    for m in _MORSE.finditer(text):
        words = re.split(r" ?/ ?| {3}", m.group(0).strip())
        dec = " ".join("".join(_MORSE_TABLE.get(c, "") for c in w.split()) for w in words)
        if _wordiness(dec) >= 2:
            out.append(dec)
    if len(_PCT.findall(text)) >= 3:
        take(urllib.parse.unquote(text).encode())
    return out


def normalize(text: str) -> str:
    """NFKC, no zero-width characters, look-alike letters mapped to Latin, lower case."""
    t = unicodedata.normalize("NFKC", text)
    t = _ZW.sub("", t).translate(_CONFUSABLE)
    return t.lower()


def variants(text: str) -> list[str]:
    """The texts a detector should look at: normalized, de-obfuscated and decoded forms."""
    base = normalize(text)
    out = [base]
    joined = _SPACED.sub(lambda m: re.sub(r"[ ._*-]", "", m.group(0)), base)
    leet = re.sub(
        r"(?<=[a-z])[0134578@$!]|[0134578@$!](?=[a-z])",
        lambda m: m.group(0).translate(_LEET),
        joined,
    )
    if leet != base:
        out.append(leet)
    out.extend(normalize(d) for d in _decode_runs(text))
    # rot13 and reversed text: looked at only when they read more like language than the original
    plain = _wordiness(base)
    for alt in (codecs.decode(base, "rot13"), base[::-1]):
        if _wordiness(alt) >= max(3, 2 * plain + 1):
            out.append(alt)
    return out


def features(text: str) -> dict[str, float]:
    """Sparse features of one (already normalized) text."""
    toks = _TOKEN.findall(text)[:2000]
    feats: dict[str, float] = {}
    for t in toks:
        feats["w:" + t] = 1.0
    for a, b in itertools.pairwise(toks):
        feats["b:" + a + " " + b] = 1.0
    squeezed = " " + re.sub(r"\s+", " ", text[:4000]) + " "
    for i in range(len(squeezed) - 3):
        feats["c:" + squeezed[i : i + 4]] = 1.0
    n = 0
    for name, rx in _CUES:
        if rx.search(text):
            feats["cue:" + name] = 1.0
            n += 1
    if n:
        feats[f"cues:{min(n, 4)}"] = 1.0
    feats["len:" + str(min(int(math.log2(len(text) + 1)), 12))] = 1.0
    return feats


def cues(text: str) -> list[str]:
    """Names of the attack cues present in any variant of ``text``."""
    return sorted({name for v in variants(text) for name, rx in _CUES if rx.search(v)})


@functools.lru_cache(maxsize=1)
def load_model() -> dict[str, Any]:
    """The shipped weights: ``{"bias", "weights": {feature: w}, "threshold", "meta"}``."""
    data = resources.files("keel.evals.builtins").joinpath(WEIGHTS_FILE).read_text("utf-8")
    return dict(json.loads(data))


def _prob(feats: dict[str, float], model: dict[str, Any]) -> float:
    w = model["weights"]
    z = float(model["bias"]) + sum(w.get(f, 0.0) * v for f, v in feats.items())
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def injection_probability(text: str, model: dict[str, Any] | None = None) -> float:
    """p(injection) of one text: the maximum over its variants."""
    m = model or load_model()
    return max(_prob(features(v), m) for v in variants(text)) if text.strip() else 0.0


def default_cut() -> float:
    """The shipped probability cut (chosen at <= 1 % FPR on held-out benign dev text)."""
    return float(load_model()["threshold"])


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if hasattr(value, "content"):
        return [str(value.content or "")]
    if isinstance(value, dict):
        c = value.get("content") or value.get("text") or value.get("page_content")
        return [c if isinstance(c, str) else json.dumps(value, ensure_ascii=False, default=str)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _texts(v)]
    return [str(value)]


class PromptInjection(Evaluator):
    """Passes when no scanned text looks like a prompt injection; value = 1 - max p(injection).

    Scans ``query`` (direct injection), ``context`` (documents and tool output: indirect
    injection) and ``messages`` (user and tool messages); ``scan=["query"]`` narrows it.
    ``cut`` overrides the probability cut (default: the calibrated one in the weights file).
    """

    name = "PromptInjection"
    version = "2"  # 2: more decoders and indirect-injection cues, weights retrained
    aliases = ("Injection", "Jailbreak")
    optional_inputs = frozenset({"query", "context", "messages", "response"})
    default_threshold = 0.5  # per instance: 1 - the calibrated cut (see __init__)

    def __init__(
        self,
        *,
        threshold: float | None = None,
        cut: float | None = None,
        scan: list[str] | None = None,
    ) -> None:
        scan = scan or ["query", "context", "messages"]
        bad = set(scan) - {"query", "context", "messages", "response"}
        if bad:
            raise ValueError(f"cannot scan {sorted(bad)}")
        if cut is None and threshold is None:
            cut = default_cut()
        elif cut is None:
            cut = 1.0 - float(threshold or 0.5)
        super().__init__(threshold=1.0 - cut, scan=scan)
        self.scan = scan

    @property
    def cut(self) -> float:
        """The probability cut, ``1 - threshold`` (a row is flagged when p > cut)."""
        return 1.0 - self.threshold

    def _evaluate(self, **inputs: Any) -> EvalResult:
        texts: list[tuple[str, str]] = []
        for field in self.scan:
            v = inputs.get(field)
            if field == "messages" and v:
                v = [
                    m.get("content") if isinstance(m, dict) else getattr(m, "content", None)
                    for m in v
                    if (m.get("role") if isinstance(m, dict) else getattr(m, "role", None))
                    in ("user", "tool")
                ]
                v = [x for x in v if isinstance(x, str)]
            texts.extend((field, t) for t in _texts(v))
        if not texts:
            raise ValueError(f"PromptInjection needs one of {self.scan}")
        model = load_model()
        scored = [(injection_probability(t, model), f, t) for f, t in texts]
        p, where, worst = max(scored, key=lambda x: x[0])
        found = cues(worst)
        flagged = p > self.cut
        reason = (
            (
                f"likely injection in {where} (p={p:.2f}"
                + (f", cues: {', '.join(found)})" if found else ")")
            )
            if flagged
            else f"no injection found (max p={p:.2f})"
        )
        return EvalResult(
            1.0 - p,
            reason,
            {"probability": round(p, 4), "source": where, "cues": found, "cut": round(self.cut, 4)},
        )


EVALUATORS = [PromptInjection]
