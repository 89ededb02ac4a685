"""The worker side: job functions, the transcription pipeline and the worker entry point.

Heavy imports (faster-whisper, CTranslate2) happen only inside the engine host process.
"""
