"""The targeted attack suite (paper §3-4), decomposed as in TextAttack but multilabel and without softmax:

goal (what counts as success, owns batching/caching/query budget) + constraints (stop words, change
budget, similarity) + transformation (masked-LM word substitutions) + search (greedy by word importance).
"""
