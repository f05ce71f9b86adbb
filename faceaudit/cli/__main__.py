from faceaudit.cli import app

app()
