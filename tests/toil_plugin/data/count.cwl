# One sample's step: 1.5 cores (sjq rounds up to 2 CPUs) and 200 MiB of memory.
cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c, 'printf "%s\n" "$0" | tr a-z A-Z > upper.txt']
requirements:
  ResourceRequirement:
    coresMin: 1.5
    ramMin: 200
inputs:
  word:
    type: string
    inputBinding: {position: 1}
outputs:
  upper:
    type: File
    outputBinding: {glob: upper.txt}
