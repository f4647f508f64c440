from support import Daemon


def test_submit_runs_and_reports(daemon: Daemon) -> None:
    jid = daemon.submit("#!/bin/sh\necho hello $SJQ_JOBID\nexit 3\n", name="hi")
    assert daemon.wait_state(jid, "SF") == "F"
    assert (daemon.jobs_dir / f"{jid}.stdout").read_text() == f"hello {jid}\n"
    info = daemon.info(jid)
    assert info["exit_code"] == 3
