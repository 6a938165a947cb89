use super::*;

struct Fake(Vec<&'static str>);

impl ToolLocator for Fake {
    fn locate(&self, name: &str) -> Option<PathBuf> {
        self.0
            .contains(&name)
            .then(|| PathBuf::from(format!("/host/bin/{name}")))
    }
}

fn file<'a>(p: &'a Provision, path: &str) -> &'a str {
    let f = p
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path} in {:?}", p.files));
    std::str::from_utf8(&f.bytes).unwrap()
}

#[test]
fn inline_skill_gets_front_matter() {
    let skills = vec![Skill::Inline {
        name: "review".into(),
        content: "# Review code\nLook for bugs.".into(),
    }];
    let p = plan(&skills, Path::new("/"), None, &Fake(vec![])).unwrap();
    let md = file(&p, "/workspace/.claude/skills/review/SKILL.md");
    assert!(
        md.starts_with("---\nname: review\ndescription: \"Review code\"\n---\n"),
        "{md}"
    );
    assert!(md.ends_with("Look for bugs."));
}

#[test]
fn mcp_servers_go_to_mcp_json() {
    let skills = vec![
        Skill::McpCommand {
            name: None,
            command: "/usr/bin/my-server".into(),
            args: vec!["--x".into()],
            env: BTreeMap::new(),
        },
        Skill::McpUrl {
            name: Some("docs".into()),
            url: "http://127.0.0.1:9/mcp".into(),
        },
        Skill::Mcp("echo-mcp".into()),
    ];
    let p = plan(&skills, Path::new("/"), None, &Fake(vec!["echo-mcp"])).unwrap();
    let v: Value = serde_json::from_str(file(&p, MCP_JSON)).unwrap();
    assert_eq!(
        v["mcpServers"]["my-server"]["command"],
        "/usr/bin/my-server"
    );
    assert_eq!(v["mcpServers"]["docs"]["type"], "http");
    assert_eq!(
        v["mcpServers"]["echo-mcp"]["command"],
        "/home/sandbox/.local/bin/echo-mcp"
    );
    assert_eq!(
        p.tools,
        vec![ToolToInstall {
            host_path: "/host/bin/echo-mcp".into(),
            name: "echo-mcp".into()
        }]
    );
}

#[test]
fn duplicate_server_names_are_refused() {
    let s = || Skill::McpUrl {
        name: Some("x".into()),
        url: "http://a/mcp".into(),
    };
    let e = plan(&[s(), s()], Path::new("/"), None, &Fake(vec![])).unwrap_err();
    assert!(
        e.to_string().contains("skills[1]") && e.to_string().contains("`x`"),
        "{e}"
    );
}

#[test]
fn agents_and_missing_binaries() {
    let p = plan(
        &[Skill::Agent("husk-test-agent".into())],
        Path::new("/"),
        None,
        &Fake(vec!["husk-test-agent"]),
    )
    .unwrap();
    let a = p.agent.unwrap();
    assert_eq!(
        (a.kind, a.program.as_str()),
        (AgentKind::ClaudeCode, "husk-test-agent")
    );
    let e = plan(
        &[Skill::Agent("claude-code".into())],
        Path::new("/"),
        None,
        &Fake(vec![]),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("agent binary `claude` not found"),
        "{e}"
    );
    assert!(e.to_string().contains("HUSK_CLAUDE_BIN"), "{e}");
    let e = plan(
        &[Skill::Remote("x/y".into())],
        Path::new("/"),
        None,
        &Fake(vec![]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
}

#[test]
fn input_is_written() {
    let p = plan(&[], Path::new("/"), Some(&json!({"n": 1})), &Fake(vec![])).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(file(&p, "/workspace/input.json")).unwrap(),
        json!({"n": 1})
    );
}

#[test]
fn file_skills_from_disk() {
    let dir = std::env::temp_dir().join(format!("husk-skill-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("lint/scripts")).unwrap();
    std::fs::write(
        dir.join("lint/SKILL.md"),
        "---\nname: lint\ndescription: d\n---\nbody",
    )
    .unwrap();
    std::fs::write(dir.join("lint/scripts/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        dir.join("single.md"),
        "---\nname: single-one\ndescription: d\n---\nx",
    )
    .unwrap();
    let skills = vec![
        Skill::File("lint".into()),
        Skill::File(dir.join("single.md").display().to_string()),
    ];
    let p = plan(&skills, &dir, None, &Fake(vec![])).unwrap();
    assert!(file(&p, "/workspace/.claude/skills/lint/SKILL.md").contains("body"));
    assert!(file(&p, "/workspace/.claude/skills/lint/scripts/run.sh").starts_with("#!"));
    assert!(file(&p, "/workspace/.claude/skills/single-one/SKILL.md").ends_with('x'));
    let e = plan(&[Skill::File("nope".into())], &dir, None, &Fake(vec![])).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_skills_refuse_symlinks_out_fifos_and_huge_files() {
    let dir = std::env::temp_dir().join(format!("husk-skill-sym-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("s")).unwrap();
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "---\nname: leak\n---\nTOP SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("s/SKILL.md")).unwrap();
    let e = plan(
        &[Skill::File("s/SKILL.md".into())],
        &dir,
        None,
        &Fake(vec![]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("outside the skill's directory"), "{e}");
    assert!(!e.contains("TOP SECRET"));
    // A link inside the skill's own directory is fine.
    std::fs::write(dir.join("s/real.md"), "---\nname: inside\n---\nok").unwrap();
    std::os::unix::fs::symlink("real.md", dir.join("s/link.md")).unwrap();
    let p = plan(
        &[Skill::File("s/link.md".into())],
        &dir,
        None,
        &Fake(vec![]),
    )
    .unwrap();
    assert!(file(&p, "/workspace/.claude/skills/inside/SKILL.md").ends_with("ok"));
    // A FIFO is refused at once instead of hanging the run.
    assert!(
        std::process::Command::new("mkfifo")
            .arg(dir.join("s/fifo.md"))
            .status()
            .unwrap()
            .success()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let d2 = dir.clone();
    std::thread::spawn(move || {
        let r = plan(&[Skill::File("s/fifo.md".into())], &d2, None, &Fake(vec![]));
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    let e = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a FIFO skill must not hang")
        .unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    std::fs::write(dir.join("s/big.md"), vec![b'x'; 2 << 20]).unwrap();
    let e = plan(&[Skill::File("s/big.md".into())], &dir, None, &Fake(vec![]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 MiB limit"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
