"""The A1111 prompt language → what the UNet sees: emphasis weights, BREAK, chunks of 75 tokens, prompt editing and
alternation, textual-inversion embeddings (SD 1.x, SD 2.x, SDXL).

>>> conditioning = encode_prompt(pipe, "a (red:1.3) fox", "blurry", steps=25)
>>> pipe(**conditioning.at_step(0), num_inference_steps=25)
"""

from sdart.conditioning.embeddings import Embedding, Embeddings, read_embedding
from sdart.conditioning.encode import Conditioning, EncodedPrompt, encode_prompt
from sdart.conditioning.encoder import DEFAULT_EMPHASIS, EMPHASIS_MODES
from sdart.conditioning.parser import Fragment, parse_weights, prompt_schedule

__all__ = [
    "DEFAULT_EMPHASIS",
    "EMPHASIS_MODES",
    "Conditioning",
    "Embedding",
    "Embeddings",
    "EncodedPrompt",
    "Fragment",
    "encode_prompt",
    "parse_weights",
    "prompt_schedule",
    "read_embedding",
]
