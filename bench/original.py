"""The original task, karpathy/autoresearch at ORIGINAL_COMMIT: what a fork is compared against.

PREPARE_EXPORTS is every public name the original's prepare.py defines (its imported modules aside);
bench/prepare.py exports each of them with the same meaning, so a train.py written against the original
runs unchanged. CONSTANTS are the original's values of the constants that define the task.
"""

ORIGINAL_REPO = "karpathy/autoresearch"
ORIGINAL_COMMIT = "228791fb499afffb54b46200aca536f79142f117"

PREPARE_EXPORTS = frozenset({
    # constants
    "MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE", "SPLIT_PATTERN", "SPECIAL_TOKENS", "BOS_TOKEN",
    # configuration
    "CACHE_DIR", "DATA_DIR", "TOKENIZER_DIR", "BASE_URL", "MAX_SHARD", "VAL_SHARD", "VAL_FILENAME",
    # data download, tokenizer training
    "download_single_shard", "download_data", "list_parquet_files", "text_iterator", "train_tokenizer",
    # runtime utilities imported by train.py
    "Tokenizer", "get_token_bytes", "make_dataloader", "evaluate_bpb",
})

CONSTANTS = {
    "MAX_SEQ_LEN": 2048,
    "TIME_BUDGET": 300,
    "EVAL_TOKENS": 40 * 524288,
    "VOCAB_SIZE": 8192,
    "BASE_URL": "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main",
    "MAX_SHARD": 6542,
    "VAL_SHARD": 6542,
    "VAL_FILENAME": "shard_06542.parquet",
}

TASK_FILES = ("prepare.py", "train.py", "program.md")   # what the original's experiments are made of
