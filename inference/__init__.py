"""Inference, nanochat's "engine": sampling and generate, the KV cache, budget forcing of the thinking,
UTF-8-safe streaming, the think/answer splitter, chat sessions and the REPL, and loading a stage's model.

Not here: the network itself (model/), the HTTP server (serving/), batch scores (evaluation/).
Import from the modules (inference.generate, inference.chat, ...): this file imports nothing, so that
model/ can reach its cache class without an import cycle.
"""
