#!/bin/sh
# A first sjq job: `sjq submit --wait examples/hello.sh` queues it, waits for it, and exits
# with its status; its output is in <id>.stdout in the directory you submitted from.
#SJQ --name hello --mem 10M --procs 1
echo "hello from sjq job $SJQ_JOBID ($SJQ_PROCS CPU, $SJQ_MEM bytes reserved) in $PWD"
