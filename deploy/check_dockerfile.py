"""Structural checks of deploy/Dockerfile that run without a Docker daemon:
multi-stage, a small non-root runtime stage with a data volume, a health
check, and COPY --from naming real stages."""
import sys

from dockerfile_parse import DockerfileParser


def main(path: str) -> int:
    p = DockerfileParser(path=path)
    stages = []  # (name, [instructions])
    for ins in p.structure:
        if ins["instruction"] == "FROM":
            parts = ins["value"].split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append((parts[0], name, []))
        elif stages:
            stages[-1][2].append(ins)
    errors = []
    if len(stages) < 2:
        errors.append("not a multi-stage build")
    names = {n for _, n, _ in stages if n}
    base, _, final = stages[-1]
    if "slim" not in base and "distroless" not in base:
        errors.append(f"runtime stage {base} is not a small base image")
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        errors.append("runtime stage does not switch to a non-root USER")
    if not any(i["instruction"] == "VOLUME" for i in final):
        errors.append("runtime stage declares no data VOLUME")
    if not any(i["instruction"] == "HEALTHCHECK" for i in final):
        errors.append("runtime stage has no HEALTHCHECK")
    if not any(i["instruction"] == "ENTRYPOINT" and "ledgerd" in i["value"] for i in final):
        errors.append("runtime stage does not run ledgerd")
    for _, _, body in stages:
        for i in body:
            if i["instruction"] == "COPY" and "--from=" in i["value"]:
                src = i["value"].split("--from=")[1].split()[0]
                if src not in names:
                    errors.append(f"COPY --from={src}: no such stage")
    for e in errors:
        print(f"{path}: {e}", file=sys.stderr)
    if not errors:
        print(f"{path}: {len(stages)} stages, runtime {base} as user {users[-1]}: OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
