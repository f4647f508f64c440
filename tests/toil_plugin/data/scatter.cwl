# A fan-out over samples: one count.cwl step per word.
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  words: string[]
outputs:
  uppers:
    type: File[]
    outputSource: count/upper
steps:
  count:
    run: count.cwl
    scatter: word
    in: {word: words}
    out: [upper]
