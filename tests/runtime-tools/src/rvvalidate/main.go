// rvvalidate: OCI runtime validation for rust-vm, written for this project.
//
// Debian's golang-github-opencontainers-runtime-tools-dev ships the runtime-tools libraries
// (generate, validate, specerror) but not upstream's validation/ tests nor cmd/runtimetest, so
// this program is our own suite on top of those libraries: each case builds a bundle with
// runtime-tools' `generate` (the same defaults the upstream suite starts from), checks it with
// `validate`, drives the runtime through the OCI command line (create, start, state, kill,
// delete) and checks what the runtime spec requires, from the host and from inside the container
// (busybox commands whose output the case reads back). Output is TAP, one line per case.
//
// The cases are a table: many open with the same create/start/wait/delete steps on purpose, so
// each reads top to bottom as the sequence the spec describes and fails at its own step.
//
// Usage: rvvalidate -runtime "PATH [GLOBAL ARGS...]" -busybox /bin/busybox [-run REGEXP]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	multierror "github.com/hashicorp/go-multierror"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-tools/generate"
	"github.com/opencontainers/runtime-tools/validate"
)

var (
	runtimeFlag = flag.String("runtime", "runc", "runtime command and global arguments")
	busyboxFlag = flag.String("busybox", "/bin/busybox", "static busybox for the bundles' rootfs")
	runFlag     = flag.String("run", "", "only cases whose name matches this regexp")
	workFlag    = flag.String("work", "", "work directory (default: a new temporary one)")
	timeout     = 15 * time.Second
)

type state struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	Pid         int               `json:"pid"`
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations"`
}

// env is what a case gets: a runtime to drive and a place for bundles.
type env struct {
	runtime []string
	work    string
	seq     int
	ids     []string
}

type bundle struct {
	dir    string
	id     string
	stdout string
	stderr string
}

func (e *env) cmd(args ...string) *exec.Cmd {
	all := append(append([]string{}, e.runtime[1:]...), args...)
	return exec.Command(e.runtime[0], all...)
}

// rt runs the runtime with args; the error carries its stderr.
func (e *env) rt(args ...string) (string, error) {
	c := e.cmd(args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	c.Stdin = nil
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", filepath.Base(e.runtime[0]), strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// newBundle makes a bundle whose process runs `sh -c script`, after `edit` changes the spec.
func (e *env) newBundle(script string, edit func(g *generate.Generator)) (*bundle, error) {
	e.seq++
	id := fmt.Sprintf("rvv-%d-%d", os.Getpid(), e.seq)
	dir := filepath.Join(e.work, id)
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "mnt"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 01777); err != nil {
		return nil, err
	}
	data, err := ioutil.ReadFile(*busyboxFlag)
	if err != nil {
		return nil, err
	}
	if err := ioutil.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0755); err != nil {
		return nil, err
	}
	for _, applet := range []string{"sh", "cat", "echo", "id", "hostname", "ls", "grep", "sleep", "touch", "mkdir", "readlink", "wc", "test", "stat", "head", "cut"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			return nil, err
		}
	}
	// Targets for the masked and read-only path cases.
	if err := ioutil.WriteFile(filepath.Join(rootfs, "secret-file"), []byte("secret\n"), 0644); err != nil {
		return nil, err
	}
	for _, d := range []string{"secret-dir/sub", "rodir"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0755); err != nil {
			return nil, err
		}
	}
	g, err := generate.New("linux")
	if err != nil {
		return nil, err
	}
	g.SetRootPath("rootfs")
	g.SetProcessArgs([]string{"sh", "-c", script})
	g.SetHostname("rvvalidate")
	if edit != nil {
		edit(&g)
	}
	if err := g.SaveToFile(filepath.Join(dir, "config.json"), generate.ExportOptions{}); err != nil {
		return nil, err
	}
	// The bundle must be valid before any runtime sees it.
	v, err := validate.NewValidatorFromPath(dir, true, "linux")
	if err != nil {
		return nil, err
	}
	// Everything CheckAll does except the JSON schema, which it downloads (no network here).
	var errs *multierror.Error
	for _, check := range []func() error{v.CheckPlatform, v.CheckRoot, v.CheckMandatoryFields, v.CheckSemVer, v.CheckMounts, v.CheckProcess, v.CheckLinux, v.CheckAnnotations, v.CheckHooks} {
		errs = multierror.Append(errs, check())
	}
	if err := errs.ErrorOrNil(); err != nil {
		return nil, fmt.Errorf("generated bundle does not validate: %v", err)
	}
	return &bundle{dir: dir, id: id, stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr")}, nil
}

// create runs `create --bundle DIR ID` with the container's stdio in files.
func (e *env) create(b *bundle, extra ...string) error {
	out, err := os.Create(b.stdout)
	if err != nil {
		return err
	}
	defer out.Close()
	errf, err := os.Create(b.stderr)
	if err != nil {
		return err
	}
	defer errf.Close()
	args := append([]string{"create", "--bundle", b.dir}, extra...)
	args = append(args, b.id)
	c := e.cmd(args...)
	c.Stdout, c.Stderr = out, errf
	e.ids = append(e.ids, b.id)
	if err := c.Run(); err != nil {
		msg, _ := ioutil.ReadFile(b.stderr)
		return fmt.Errorf("create %s: %v: %s", b.id, err, strings.TrimSpace(string(msg)))
	}
	return nil
}

func (e *env) state(id string) (state, error) {
	var s state
	out, err := e.rt("state", id)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("state %s: not JSON: %v: %q", id, err, out)
	}
	return s, nil
}

func (e *env) waitStatus(id, want string) error {
	deadline := time.Now().Add(timeout)
	for {
		s, err := e.state(id)
		if err != nil {
			return err
		}
		if s.Status == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s is %q after %v, expected %q", id, s.Status, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runToEnd creates, starts and waits for a container, and returns its stdout.
func (e *env) runToEnd(script string, edit func(g *generate.Generator)) (string, error) {
	b, err := e.newBundle(script, edit)
	if err != nil {
		return "", err
	}
	if err := e.create(b); err != nil {
		return "", err
	}
	if _, err := e.rt("start", b.id); err != nil {
		return "", err
	}
	if err := e.waitStatus(b.id, "stopped"); err != nil {
		return "", err
	}
	out, err := ioutil.ReadFile(b.stdout)
	if _, derr := e.rt("delete", b.id); derr != nil && err == nil {
		err = derr
	}
	return string(out), err
}

func (e *env) cleanup() {
	for _, id := range e.ids {
		_, _ = e.rt("delete", "--force", id)
	}
	e.ids = nil
}

func expectOutput(got, want string) error {
	if got != want {
		return fmt.Errorf("container printed %q, expected %q", got, want)
	}
	return nil
}

func pidAlive(pid int) bool {
	data, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndex(s, ")")
	return i < 0 || !strings.HasPrefix(s[i+2:], "Z")
}

type testCase struct {
	name string
	fn   func(e *env) error
}

func cases() []testCase {
	return []testCase{
		// --- lifecycle (runtime.md) ---
		{"state_after_create", func(e *env) error {
			b, err := e.newBundle("true", func(g *generate.Generator) { g.AddAnnotation("org.rvvalidate.key", "value") })
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			s, err := e.state(b.id)
			if err != nil {
				return err
			}
			switch {
			case s.OCIVersion == "":
				return fmt.Errorf("state has no ociVersion")
			case s.ID != b.id:
				return fmt.Errorf("state id %q, expected %q", s.ID, b.id)
			case s.Status != "created":
				return fmt.Errorf("status %q after create, expected created", s.Status)
			case s.Pid <= 0:
				return fmt.Errorf("pid %d after create", s.Pid)
			case s.Bundle != b.dir:
				return fmt.Errorf("bundle %q, expected %q", s.Bundle, b.dir)
			case s.Annotations["org.rvvalidate.key"] != "value":
				return fmt.Errorf("annotations %v lack org.rvvalidate.key=value", s.Annotations)
			}
			return nil
		}},
		{"create_duplicate_id_fails", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("create", "--bundle", b.dir, b.id); err == nil {
				return fmt.Errorf("a second create with id %s succeeded", b.id)
			}
			s, err := e.state(b.id)
			if err != nil || s.Status != "created" {
				return fmt.Errorf("the first container changed: %v %v", s.Status, err)
			}
			return nil
		}},
		{"create_without_config_fails", func(e *env) error {
			dir := filepath.Join(e.work, "empty-bundle")
			_ = os.MkdirAll(dir, 0755)
			if _, err := e.rt("create", "--bundle", dir, "rvv-noconfig"); err == nil {
				e.ids = append(e.ids, "rvv-noconfig")
				return fmt.Errorf("create of a bundle without config.json succeeded")
			}
			return nil
		}},
		{"state_unknown_id_fails", func(e *env) error {
			if _, err := e.rt("state", "rvv-does-not-exist"); err == nil {
				return fmt.Errorf("state of an unknown id succeeded")
			}
			return nil
		}},
		{"start_runs_the_process", func(e *env) error {
			out, err := e.runToEnd("echo started", nil)
			if err != nil {
				return err
			}
			return expectOutput(out, "started\n")
		}},
		{"process_waits_for_start", func(e *env) error {
			b, err := e.newBundle("echo ran", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			time.Sleep(300 * time.Millisecond)
			out, _ := ioutil.ReadFile(b.stdout)
			if len(out) != 0 {
				return fmt.Errorf("the process ran before start: %q", out)
			}
			return nil
		}},
		{"start_twice_fails", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err == nil {
				return fmt.Errorf("start of a running container succeeded")
			}
			return nil
		}},
		{"state_running_has_live_pid", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			s, err := e.state(b.id)
			if err != nil {
				return err
			}
			if s.Status != "running" {
				return fmt.Errorf("status %q after start, expected running", s.Status)
			}
			if !pidAlive(s.Pid) {
				return fmt.Errorf("state pid %d is not a live process", s.Pid)
			}
			return nil
		}},
		{"kill_stops_a_running_container", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if _, err := e.rt("kill", b.id, "KILL"); err != nil {
				return err
			}
			return e.waitStatus(b.id, "stopped")
		}},
		{"kill_a_created_container", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("kill", b.id, "KILL"); err != nil {
				return err
			}
			return e.waitStatus(b.id, "stopped")
		}},
		{"kill_delivers_the_signal", func(e *env) error {
			b, err := e.newBundle("trap 'echo got USR1; exit 0' USR1; echo ready; while true; do sleep 0.05; done", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			deadline := time.Now().Add(timeout)
			for {
				out, _ := ioutil.ReadFile(b.stdout)
				if strings.Contains(string(out), "ready") {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("container never printed ready")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := e.rt("kill", b.id, "USR1"); err != nil {
				return err
			}
			if err := e.waitStatus(b.id, "stopped"); err != nil {
				return err
			}
			out, _ := ioutil.ReadFile(b.stdout)
			return expectOutput(string(out), "ready\ngot USR1\n")
		}},
		{"kill_a_stopped_container_fails", func(e *env) error {
			b, err := e.newBundle("true", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if err := e.waitStatus(b.id, "stopped"); err != nil {
				return err
			}
			if _, err := e.rt("kill", b.id, "KILL"); err == nil {
				return fmt.Errorf("kill of a stopped container succeeded")
			}
			return nil
		}},
		{"delete_a_stopped_container", func(e *env) error {
			b, err := e.newBundle("true", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if err := e.waitStatus(b.id, "stopped"); err != nil {
				return err
			}
			if _, err := e.rt("delete", b.id); err != nil {
				return err
			}
			if _, err := e.rt("state", b.id); err == nil {
				return fmt.Errorf("state still succeeds after delete")
			}
			return nil
		}},
		{"delete_a_running_container_fails", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if _, err := e.rt("delete", b.id); err == nil {
				return fmt.Errorf("delete of a running container succeeded")
			}
			s, err := e.state(b.id)
			if err != nil || s.Status != "running" {
				return fmt.Errorf("the container changed: %v %v", s.Status, err)
			}
			return nil
		}},
		{"delete_force_leaves_no_process", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			s, err := e.state(b.id)
			if err != nil {
				return err
			}
			if _, err := e.rt("delete", "--force", b.id); err != nil {
				return err
			}
			deadline := time.Now().Add(5 * time.Second)
			for pidAlive(s.Pid) {
				if time.Now().After(deadline) {
					return fmt.Errorf("process %d still alive after delete --force", s.Pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
			return nil
		}},
		{"pid_file", func(e *env) error {
			b, err := e.newBundle("sleep 10", nil)
			if err != nil {
				return err
			}
			pidFile := filepath.Join(b.dir, "pidfile")
			if err := e.create(b, "--pid-file", pidFile); err != nil {
				return err
			}
			data, err := ioutil.ReadFile(pidFile)
			if err != nil {
				return err
			}
			s, err := e.state(b.id)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(data)) != strconv.Itoa(s.Pid) {
				return fmt.Errorf("pid file says %q, state says %d", data, s.Pid)
			}
			return nil
		}},
		// --- process (config.md) ---
		{"process_args_env_cwd", func(e *env) error {
			out, err := e.runToEnd("echo $RVV_VAR; pwd", func(g *generate.Generator) {
				g.AddProcessEnv("RVV_VAR", "from-spec")
				g.SetProcessCwd("/tmp")
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "from-spec\n/tmp\n")
		}},
		{"process_user", func(e *env) error {
			out, err := e.runToEnd("id -u; id -g; id -G", func(g *generate.Generator) {
				g.SetProcessUID(1000)
				g.SetProcessGID(1001)
				g.AddProcessAdditionalGid(2000)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "1000\n1001\n1001 2000\n")
		}},
		{"process_rlimits", func(e *env) error {
			out, err := e.runToEnd("ulimit -n; ulimit -Hn", func(g *generate.Generator) {
				g.AddProcessRlimits("RLIMIT_NOFILE", 2048, 512)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "512\n2048\n")
		}},
		{"process_rlimits_invalid_fails", func(e *env) error {
			b, err := e.newBundle("true", nil)
			if err != nil {
				return err
			}
			if err := editConfig(b, func(s map[string]interface{}) {
				p := s["process"].(map[string]interface{})
				p["rlimits"] = []interface{}{map[string]interface{}{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}}
			}); err != nil {
				return err
			}
			if err := e.create(b); err == nil {
				if _, err := e.rt("start", b.id); err == nil {
					return fmt.Errorf("a spec with rlimit RLIMIT_BOGUS was accepted")
				}
			}
			return nil
		}},
		{"process_no_new_privileges", func(e *env) error {
			out, err := e.runToEnd("grep NoNewPrivs /proc/self/status", func(g *generate.Generator) {
				g.SetProcessNoNewPrivileges(true)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "NoNewPrivs:\t1\n")
		}},
		{"process_capabilities", func(e *env) error {
			out, err := e.runToEnd("grep -E 'Cap(Bnd|Eff)' /proc/self/status", func(g *generate.Generator) {
				g.ClearProcessCapabilities()
				for _, add := range []func(string) error{g.AddProcessCapabilityBounding, g.AddProcessCapabilityEffective, g.AddProcessCapabilityPermitted} {
					_ = add("CAP_CHOWN")
					_ = add("CAP_KILL")
				}
			})
			if err != nil {
				return err
			}
			// CAP_CHOWN is bit 0, CAP_KILL bit 5.
			return expectOutput(out, "CapEff:\t0000000000000021\nCapBnd:\t0000000000000021\n")
		}},
		{"process_capabilities_invalid_fails", func(e *env) error {
			b, err := e.newBundle("true", nil)
			if err != nil {
				return err
			}
			if err := editConfig(b, func(s map[string]interface{}) {
				caps := s["process"].(map[string]interface{})["capabilities"].(map[string]interface{})
				caps["bounding"] = []interface{}{"CAP_BOGUS"}
			}); err != nil {
				return err
			}
			if err := e.create(b); err == nil {
				if _, err := e.rt("start", b.id); err == nil {
					return fmt.Errorf("a spec with capability CAP_BOGUS was accepted")
				}
			}
			return nil
		}},
		{"process_oom_score_adj", func(e *env) error {
			out, err := e.runToEnd("cat /proc/self/oom_score_adj", func(g *generate.Generator) {
				g.SetProcessOOMScoreAdj(500)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "500\n")
		}},
		{"hostname", func(e *env) error {
			out, err := e.runToEnd("hostname", func(g *generate.Generator) { g.SetHostname("rvv-host") })
			if err != nil {
				return err
			}
			return expectOutput(out, "rvv-host\n")
		}},
		// --- linux namespaces ---
		{"pid_namespace", func(e *env) error {
			out, err := e.runToEnd("echo $$", nil)
			if err != nil {
				return err
			}
			return expectOutput(out, "1\n")
		}},
		{"net_namespace_has_only_lo", func(e *env) error {
			out, err := e.runToEnd("ls /sys/class/net", nil)
			if err != nil {
				return err
			}
			return expectOutput(out, "lo\n")
		}},
		{"namespaces_differ_from_the_host", func(e *env) error {
			out, err := e.runToEnd("for n in ipc uts mnt net pid; do readlink /proc/self/ns/$n; done", nil)
			if err != nil {
				return err
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 5 {
				return fmt.Errorf("unexpected output %q", out)
			}
			for i, n := range []string{"ipc", "uts", "mnt", "net", "pid"} {
				host, _ := os.Readlink("/proc/self/ns/" + n)
				if lines[i] == host {
					return fmt.Errorf("%s namespace is the host's (%s)", n, host)
				}
			}
			return nil
		}},
		{"uid_mappings", func(e *env) error {
			out, err := e.runToEnd("cat /proc/self/uid_map /proc/self/gid_map", func(g *generate.Generator) {
				g.AddOrReplaceLinuxNamespace("user", "")
				g.AddLinuxUIDMapping(100000, 0, 65536)
				g.AddLinuxGIDMapping(100000, 0, 65536)
			})
			if err != nil {
				return err
			}
			fields := strings.Fields(out)
			if len(fields) != 6 || fields[0] != "0" || fields[1] != "100000" || fields[2] != "65536" || fields[3] != "0" || fields[4] != "100000" {
				return fmt.Errorf("uid/gid maps %q, expected 0 100000 65536", out)
			}
			return nil
		}},
		{"sysctl", func(e *env) error {
			out, err := e.runToEnd("cat /proc/sys/kernel/msgmax", func(g *generate.Generator) {
				g.AddLinuxSysctl("kernel.msgmax", "4096")
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "4096\n")
		}},
		// --- root filesystem and mounts ---
		{"root_readonly", func(e *env) error {
			out, err := e.runToEnd("touch /newfile 2>/dev/null && echo writable || echo readonly", func(g *generate.Generator) {
				g.SetRootReadonly(true)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "readonly\n")
		}},
		{"root_writable", func(e *env) error {
			out, err := e.runToEnd("touch /newfile 2>/dev/null && echo writable || echo readonly", nil)
			if err != nil {
				return err
			}
			return expectOutput(out, "writable\n")
		}},
		{"mount_tmpfs", func(e *env) error {
			out, err := e.runToEnd("grep ' /mnt/scratch ' /proc/mounts | cut -d' ' -f1,3", func(g *generate.Generator) {
				g.AddMount(rspec.Mount{Destination: "/mnt/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "tmpfs tmpfs\n")
		}},
		{"mount_bind", func(e *env) error {
			host := filepath.Join(e.work, fmt.Sprintf("bind-%d", e.seq))
			_ = os.MkdirAll(host, 0755)
			if err := ioutil.WriteFile(filepath.Join(host, "file"), []byte("from the host\n"), 0644); err != nil {
				return err
			}
			out, err := e.runToEnd("cat /mnt/host/file; touch /mnt/host/new 2>/dev/null && echo rw", func(g *generate.Generator) {
				g.AddMount(rspec.Mount{Destination: "/mnt/host", Type: "bind", Source: host, Options: []string{"rbind", "rw"}})
			})
			if err != nil {
				return err
			}
			if err := expectOutput(out, "from the host\nrw\n"); err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(host, "new")); err != nil {
				return fmt.Errorf("a file created in the bind mount is not on the host: %v", err)
			}
			return nil
		}},
		{"mount_bind_readonly", func(e *env) error {
			host := filepath.Join(e.work, fmt.Sprintf("bindro-%d", e.seq))
			_ = os.MkdirAll(host, 0755)
			out, err := e.runToEnd("touch /mnt/ro/x 2>/dev/null && echo writable || echo readonly", func(g *generate.Generator) {
				g.AddMount(rspec.Mount{Destination: "/mnt/ro", Type: "bind", Source: host, Options: []string{"rbind", "ro"}})
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "readonly\n")
		}},
		{"masked_paths", func(e *env) error {
			out, err := e.runToEnd("cat /secret-file; ls /secret-dir | wc -l", func(g *generate.Generator) {
				g.AddLinuxMaskedPaths("/secret-file")
				g.AddLinuxMaskedPaths("/secret-dir")
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "0\n")
		}},
		{"readonly_paths", func(e *env) error {
			out, err := e.runToEnd("touch /rodir/x 2>/dev/null && echo writable || echo readonly", func(g *generate.Generator) {
				g.AddLinuxReadonlyPaths("/rodir")
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "readonly\n")
		}},
		{"default_devices", func(e *env) error {
			out, err := e.runToEnd("for d in null zero full random urandom tty; do test -c /dev/$d && echo $d; done; test -L /dev/fd && echo fd; test -d /dev/pts && echo pts", nil)
			if err != nil {
				return err
			}
			return expectOutput(out, "null\nzero\nfull\nrandom\nurandom\ntty\nfd\npts\n")
		}},
		{"linux_devices", func(e *env) error {
			out, err := e.runToEnd("stat -c '%F %t:%T %a' /dev/rvtest", func(g *generate.Generator) {
				mode := os.FileMode(0640)
				g.AddDevice(rspec.LinuxDevice{Path: "/dev/rvtest", Type: "c", Major: 1, Minor: 3, FileMode: &mode})
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "character special file 1:3 640\n")
		}},
		{"standard_mounts", func(e *env) error {
			out, err := e.runToEnd("for m in /proc /sys /dev /dev/pts /dev/shm; do grep -q \" $m \" /proc/mounts && echo $m; done", nil)
			if err != nil {
				return err
			}
			return expectOutput(out, "/proc\n/sys\n/dev\n/dev/pts\n/dev/shm\n")
		}},
		// --- security ---
		{"seccomp_errno", func(e *env) error {
			out, err := e.runToEnd("mkdir /tmp/denied 2>/dev/null && echo allowed || echo denied", func(g *generate.Generator) {
				g.Config.Linux.Seccomp = &rspec.LinuxSeccomp{
					DefaultAction: rspec.ActAllow,
					Architectures: []rspec.Arch{rspec.ArchX86_64},
					Syscalls: []rspec.LinuxSyscall{{
						Names:  []string{"mkdir", "mkdirat"},
						Action: rspec.ActErrno,
					}},
				}
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "denied\n")
		}},
		// --- cgroups (runc uses the host's; rust-vm's agent manages cgroup v2 in the guest) ---
		{"cgroups_memory_limit", func(e *env) error {
			out, err := e.runToEnd("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes", func(g *generate.Generator) {
				g.AddMount(cgroupMount)
				g.SetLinuxResourcesMemoryLimit(64 << 20)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "67108864\n")
		}},
		{"cgroups_pids_limit", func(e *env) error {
			out, err := e.runToEnd("cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max", func(g *generate.Generator) {
				g.AddMount(cgroupMount)
				g.SetLinuxResourcesPidsLimit(100)
			})
			if err != nil {
				return err
			}
			return expectOutput(out, "100\n")
		}},
		// --- hooks (config.md#posix-platform-hooks) ---
		{"hooks_run_in_order_with_state", func(e *env) error {
			log := filepath.Join(e.work, fmt.Sprintf("hooks-%d.log", e.seq))
			hook := func(stage string) rspec.Hook {
				return rspec.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo " + stage + " $(cat) >> " + log}}
			}
			b, err := e.newBundle("true", func(g *generate.Generator) {
				g.AddPreStartHook(hook("prestart"))
				g.AddPostStartHook(hook("poststart"))
				g.AddPostStopHook(hook("poststop"))
			})
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if err := e.waitStatus(b.id, "stopped"); err != nil {
				return err
			}
			if _, err := e.rt("delete", b.id); err != nil {
				return err
			}
			data, err := ioutil.ReadFile(log)
			if err != nil {
				return fmt.Errorf("no hook ran: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(lines) != 3 {
				return fmt.Errorf("hooks log %q, expected 3 lines", data)
			}
			for i, stage := range []string{"prestart", "poststart", "poststop"} {
				fields := strings.SplitN(lines[i], " ", 2)
				if fields[0] != stage || len(fields) != 2 {
					return fmt.Errorf("hook %d: %q, expected %s first", i, lines[i], stage)
				}
				var s state
				if err := json.Unmarshal([]byte(fields[1]), &s); err != nil {
					return fmt.Errorf("%s hook's stdin is not the state JSON: %q", stage, fields[1])
				}
				if s.ID != b.id || s.Bundle != b.dir {
					return fmt.Errorf("%s hook got state for %q/%q", stage, s.ID, s.Bundle)
				}
			}
			return nil
		}},
		{"prestart_hook_failure_fails_create", func(e *env) error {
			b, err := e.newBundle("echo ran", func(g *generate.Generator) {
				g.AddPreStartHook(rspec.Hook{Path: "/bin/false"})
			})
			if err != nil {
				return err
			}
			cerr := e.create(b)
			if cerr == nil {
				_, cerr = e.rt("start", b.id)
			}
			if cerr == nil {
				return fmt.Errorf("create and start succeeded with a failing prestart hook")
			}
			out, _ := ioutil.ReadFile(b.stdout)
			if strings.Contains(string(out), "ran") {
				return fmt.Errorf("the process ran despite the failing prestart hook")
			}
			return nil
		}},
		{"poststop_hook_failure_is_not_fatal", func(e *env) error {
			b, err := e.newBundle("true", func(g *generate.Generator) {
				g.AddPostStopHook(rspec.Hook{Path: "/bin/false"})
			})
			if err != nil {
				return err
			}
			if err := e.create(b); err != nil {
				return err
			}
			if _, err := e.rt("start", b.id); err != nil {
				return err
			}
			if err := e.waitStatus(b.id, "stopped"); err != nil {
				return err
			}
			if _, err := e.rt("delete", b.id); err != nil {
				return err
			}
			if _, err := e.rt("state", b.id); err == nil {
				return fmt.Errorf("container still exists after delete")
			}
			return nil
		}},
	}
}

// cgroupMount shows the container its own cgroup (v1 hierarchies or the v2 tree).
var cgroupMount = rspec.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}}

// editConfig changes the bundle's config.json as raw JSON (for values `generate` refuses).
func editConfig(b *bundle, edit func(map[string]interface{})) error {
	path := filepath.Join(b.dir, "config.json")
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]interface{}
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	edit(spec)
	data, err = json.Marshal(spec)
	if err != nil {
		return err
	}
	return ioutil.WriteFile(path, data, 0644)
}

func main() {
	flag.Parse()
	runtime := strings.Fields(*runtimeFlag)
	if len(runtime) == 0 {
		fmt.Fprintln(os.Stderr, "rvvalidate: -runtime is empty")
		os.Exit(2)
	}
	work := *workFlag
	if work == "" {
		var err error
		if work, err = ioutil.TempDir("", "rvvalidate-"); err != nil {
			fmt.Fprintln(os.Stderr, "rvvalidate:", err)
			os.Exit(2)
		}
		defer os.RemoveAll(work)
	}
	// Reachable by the unprivileged ids a user-namespace case maps root to.
	if err := os.Chmod(work, 0755); err != nil {
		fmt.Fprintln(os.Stderr, "rvvalidate:", err)
		os.Exit(2)
	}
	var filter *regexp.Regexp
	if *runFlag != "" {
		filter = regexp.MustCompile(*runFlag)
	}
	all := cases()
	var selected []testCase
	for _, c := range all {
		if filter == nil || filter.MatchString(c.name) {
			selected = append(selected, c)
		}
	}
	fmt.Printf("TAP version 13\n1..%d\n", len(selected))
	failed := 0
	for i, c := range selected {
		e := &env{runtime: runtime, work: work, seq: i * 100}
		start := time.Now()
		err := c.fn(e)
		e.cleanup()
		took := time.Since(start).Round(time.Millisecond)
		if err != nil {
			failed++
			fmt.Printf("not ok %d - %s # %v\n", i+1, c.name, took)
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Printf("#   %s\n", line)
			}
		} else {
			fmt.Printf("ok %d - %s # %v\n", i+1, c.name, took)
		}
	}
	fmt.Printf("# passed %d of %d\n", len(selected)-failed, len(selected))
	if failed > 0 {
		os.Exit(1)
	}
}
