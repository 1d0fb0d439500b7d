"""Reading input files (JSONL, CSV, OpenAI Batch API requests) into job records or rejections that name the line.

`stream` reads a file as records and rejections; `records` checks one line; `prompts` says where a record's
prompt comes from; `csv_input` and `openai_input` read their formats.
"""
