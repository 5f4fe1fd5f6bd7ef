//! `gigafab fleet`: nodes, drains, and importing a Slurm cluster's nodes as a factory.

use super::*;

pub(super) async fn fleet(a: FleetArgs) -> Result<()> {
    let (node, action, g, body) = match a.cmd {
        None => {
            let r = a.g.conn.api()?.get(&["fleet"], &[]).await?;
            return show_as(&a.g, &r, render::fleet);
        }
        Some(FleetCmd::Drain(n)) => (
            n.node,
            "drain",
            n.g,
            n.reason.map(|r| gigafab_api::DrainNode { reason: Some(r) }),
        ),
        Some(FleetCmd::Resume(n)) => (n.node, "resume", n.g, None),
        Some(FleetCmd::ImportSlurm(i)) => return import_slurm(i),
    };
    let r = g
        .conn
        .api()?
        .post(&["fleet", "nodes", &node, action], body.as_ref())
        .await?;
    show_as(&g, &r, |n: &gigafab_api::FleetNode| {
        let state = render::word(&n.state);
        match action {
            "drain" => format!(
                "drained node {} ({state}): no new jobs start there, running ones finish\n",
                n.name
            ),
            _ => format!("resumed node {} ({state})\n", n.name),
        }
    })
}

pub(super) fn import_slurm(a: ImportSlurmArgs) -> Result<()> {
    use gigafab_exec::slurm::{SlurmCli, factory_toml, parse_scontrol_nodes};
    let text = match &a.from {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?
        }
        None => {
            let out = gigafab_exec::slurm::RealSlurm::default()
                .run("scontrol", &["show".into(), "node".into(), "-o".into()])
                .context("cannot run `scontrol` (is Slurm installed and on PATH?)")?;
            if !out.success {
                anyhow::bail!("scontrol show node failed: {}", out.stderr.trim());
            }
            out.stdout
        }
    };
    let nodes = parse_scontrol_nodes(&text);
    if nodes.is_empty() {
        anyhow::bail!("no nodes in the scontrol output");
    }
    let catalog = gigafab_core::Catalog::builtin();
    // `h100-1g.10gb`: a known type, a dash, one of its slices
    let slice = |t: &str| {
        t.match_indices('-').find_map(|(i, _)| {
            let (parent, name) = (&t[..i], &t[i + 1..]);
            catalog.index(parent)?;
            let p = gigafab_core::share::profiles::find(parent, name)?;
            Some((parent.to_string(), p.name.to_string(), p.max_per_gpu as u32))
        })
    };
    let toml = factory_toml(
        &nodes,
        &a.name,
        &a.site,
        &|t| catalog.index(t).is_some(),
        &slice,
    );
    // the result must be a valid factory
    let f = gigafab_core::Factory::parse(&toml, "<imported>")
        .context("the imported fleet is not a valid factory")?;
    match &a.out {
        Some(p) => {
            std::fs::write(p, &toml).with_context(|| format!("{}: cannot write", p.display()))?;
            note(&format!(
                "wrote {}: {} nodes, {} accelerators in {} pools",
                p.display(),
                f.nodes(),
                f.accelerators(),
                f.pools.len()
            ));
            Ok(())
        }
        None => {
            print!("{toml}");
            Ok(())
        }
    }
}
