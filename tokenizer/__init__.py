"""SpongeBob's tokenizer: the shipped byte-level BPE (vocab 6400), its loader and the ChatML template.

    from tokenizer import load_tokenizer
    tok = load_tokenizer()              # the tokenizer shipped in this directory
    ids = tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True, tokenize=True)
"""

from .chat_template import CHAT_ROLES, CHAT_TEMPLATE, render_chat
from .loader import DEFAULT_TOKENIZER_DIR, SpongeTokenizer, TokenizerError, load_tokenizer, tokenizer_for
from .specials import CONTROL_TOKENS, REASONING_TAGS, SPECIAL_TOKENS
