from tboot_py._cli import run

run()
