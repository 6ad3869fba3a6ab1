"""What a command's terminal and its log file get: the traceback of an error only in the file
(unless --verbose), the engines' repeated error lines not on the terminal, and one log file per
command even when several commands run in one process."""
import io
import logging

from flows.prefect_api import _WithoutTraceback, log_to_file


def _raise_and_log(logger):
    try:
        raise ValueError("the bad value")
    except ValueError:
        logger.error("Task run failed with exception: ValueError('the bad value')", exc_info=True)


def test_traceback_goes_to_the_file_not_the_terminal_and_commands_do_not_stack(tmp_path):
    root = logging.getLogger()
    screen = io.StringIO()
    console = logging.StreamHandler(screen)
    root.addHandler(console)
    try:
        first = log_to_file(tmp_path, "retrain", verbose=False)
        second = log_to_file(tmp_path, "refresh", verbose=False)  # a second command in the same process
        ours = [h for h in root.handlers
                if isinstance(h, logging.FileHandler) and h.baseFilename.startswith(str(tmp_path))]
        assert len(ours) == 1 and ours[0].baseFilename == str(second)
        assert isinstance(console.formatter, _WithoutTraceback) and not isinstance(console.formatter.inner,
                                                                                   _WithoutTraceback)
        _raise_and_log(logging.getLogger("graphrec.test"))  # any logger: its line, not its traceback
        _raise_and_log(logging.getLogger("prefect.task_runs"))  # the engine's repeat: not on the terminal
        ours[0].flush()
        shown, kept = screen.getvalue(), second.read_text()
        assert shown.count("the bad value") == 1 and "Traceback" not in shown
        assert kept.count("Traceback") == 2 and 'raise ValueError("the bad value")' in kept
        assert "the bad value" not in first.read_text()

        log_to_file(tmp_path, "retrain", verbose=True)  # --verbose: everything on the terminal too
        _raise_and_log(logging.getLogger("prefect.task_runs"))
        assert screen.getvalue().count("Traceback") == 1
    finally:
        root.removeHandler(console)
