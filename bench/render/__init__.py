"""Rendering by subject: text (markdown tables, terminal lines) made from statistics and records.

Nothing here reads or writes a file; ``bench.publish`` writes what these modules return.
"""
