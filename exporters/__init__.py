"""Writers that turn a checkpoint into other tools' formats: a Hugging Face LlamaForCausalLM directory
(hf_dir.py, with its own safetensors writer) and one GGUF file for llama.cpp and Ollama (gguf_file.py).

Not here: the weight-name map (model/hf.py) and the command line (export.py).
"""
