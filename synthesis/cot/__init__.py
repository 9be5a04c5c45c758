"""Reasoning data as Spark sources: the verifiable synthetic tasks of `synthesis.reasoning` in each
thinking mode (and as preference and RL rows), and a teacher model's replies to the user's prompts
checked against their answers. `jobs/build_cot.py` writes them as output folders.

    synthetic.py   a source plan per output folder: sample numbers in, formatted rows out
    prompts.py     the teacher's prompts: shard folders or JSONL, with answers
    teacher.py     prompts x modes -> the model client -> checked, formatted rows
    describe.py    what a folder holds: task kinds, languages, decisions, reply lengths
"""
