"""The parts of `benchmarks.bench_motion` (import the modules themselves; this imports nothing).

* `benchmarks._motion.served`: ``espdetect serve`` on an emulated camera, with a viewer, the
  server's CPU over a window and its ``/stats`` counters;
* `benchmarks._motion.still`: still scenes (a picture with people, sensor noise, a brightness
  ramp): CPU with gating on and off, model calls beyond the keep-alive;
* `benchmarks._motion.appear`: a person walking in after a long still stretch, trial after trial:
  how many frames after the first detectable one the server's detections have them;
* `benchmarks._motion.clip`: the profiler on the recorded yard clip: tracking against the last
  boxes at the same model calls, recall with gating on and off.
"""
