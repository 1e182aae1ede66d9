"""How a job ended, in one vocabulary for every door: the CLI's exit code, the web service's job
status, the batch manifest and Ray all say the same word for the same outcome.

    done       every image finished
    partial    some images stopped early (their loss became NaN; each keeps its last good
               image, and its metadata says at which step); the others finished
    failed     nothing usable was made: every image stopped, or the job could not run
    stopped    interrupted (Ctrl-C, a server stop, a batch stop); its checkpoint resumes it
    cancelled  stopped by the user for good (the web service's cancel)
"""

from __future__ import annotations

DONE, PARTIAL, FAILED, STOPPED, CANCELLED = "done", "partial", "failed", "stopped", "cancelled"
FINISHED = (DONE, PARTIAL, FAILED, CANCELLED)

# The CLI's exit codes. 1 is taken by outputs that had to be rescued into another folder and
# 2 by usage errors (argparse); a stop exits 128 + the signal's number.
EXIT_CODES = {DONE: 0, FAILED: 3, PARTIAL: 4}


def stopped_images_text(stopped: dict[int, int]) -> str:
    """One sentence naming the images that stopped early: {image index: step}."""
    parts = [f"image {i} at step {step}" for i, step in sorted(stopped.items())]
    return (
        f"{len(stopped)} image(s) stopped early because the loss became NaN ({', '.join(parts)}); "
        "each holds its last good image. Try a lower --learning-rate or another --optimiser."
    )
