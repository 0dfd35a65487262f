"""Prompts: the one way a problem becomes model input, for training and answering alike.

A variant must be asked at answer time exactly what it was trained on, and the demo base
pretrained on exactly that layout too, so the template, the chat messages and their
rendering live here once.  Also here: the special tokens and chat template of the
project's own byte-level tokenizers (the demo base and the tiny test models).
"""

from __future__ import annotations

# The prompt of the Qwen2.5-Math evaluation harness: reason, then box the answer.
DEFAULT_TEMPLATE = ("{problem}\n\nPlease reason step by step, and put your final answer "
                    "within \\boxed{{}}.")

BOS, EOS, PAD, IM_START = "<|bos|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
# ChatML-like, as in Qwen: every turn ends with EOS, so a model that "answers" stops there.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def check_template(template: str) -> None:
    r"""Raise ValueError unless ``template`` formats with ``{problem}`` alone.

    Literal braces (a ``\boxed{..}`` in a one-shot example) must be doubled, as in
    :func:`str.format`; a single one would fail only when the first prompt is rendered.

    Examples
    --------
    >>> check_template("{problem} Put the answer in {{}}.")
    >>> check_template("{problem} For example {83}.")
    Traceback (most recent call last):
    ...
    ValueError: prompt_template '{problem} For example {83}.' cannot be filled in with the problem alone (IndexError: Replacement index 83 out of range for positional args tuple); {problem} is its only placeholder, so write other braces doubled, as in \boxed{{}}
    """
    if "{problem}" not in template:
        raise ValueError("prompt_template must contain {problem}")
    try:
        template.format(problem="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"prompt_template {template!r} cannot be filled in with the problem "
                         f"alone ({type(exc).__name__}: {exc}); {{problem}} is its only "
                         "placeholder, so write other braces doubled, as in \\boxed{{}}") from None


def chat_messages(text: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """``text`` as the user turn, after the system turn when there is one.

    Examples
    --------
    >>> chat_messages("1+1?", "Be brief.")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '1+1?'}]
    """
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    msgs.append({"role": "user", "content": text})
    return msgs


def chat_prompt(tokenizer, text: str, system_prompt: str | None = None) -> str:
    """``text`` as the user turn of the tokenizer's chat template, ready for the reply.

    The one place prompts are rendered: pretraining the demo base lays its examples out
    with it too, so the base sees at training time exactly what it is asked at answer time.
    """
    return tokenizer.apply_chat_template(chat_messages(text, system_prompt),
                                         add_generation_prompt=True, tokenize=False)
