"""The pipeline that makes a video from any start: the session, the memory plan, the stages, the work."""
