//go:build unix

package dnsprovider

import (
	"os/exec"
	"syscall"
)

// killGroup makes cmd the leader of a process group, killed whole when
// its context ends, so that a hook's children do not outlive it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
